"""Print the README's first example ("## Using it"), as a new user would paste it into a file."""
import re
import sys
from pathlib import Path

readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
match = re.search(r"## Using it\n\n```python\n(.*?)```", readme, re.S)
if match is None:
    sys.exit("README.md has no ```python block right under '## Using it'")
sys.stdout.write(match.group(1))
