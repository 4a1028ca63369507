# A deep tree with long names (paths far beyond tar's 100-byte name field) and many files.
import os
from casegen import write

path = "deep"
for level in range(40):
    path = os.path.join(path, f"level-{level:02d}-" + "x" * 20)
    write(os.path.join(path, "file"), f"level {level}\n")
write(os.path.join(path, "n" * 250), "longest name\n")
for i in range(400):
    write(f"wide/d{i % 20:02d}/f{i:03d}", f"{i}\n")
