import sys
from pathlib import Path

# train_toys.py (tiny model, data and loader shared by these tests and the DDP worker script)
sys.path.insert(0, str(Path(__file__).parent))
