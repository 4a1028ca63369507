"""Mounts the tests leave behind: finding them in /proc/self/mountinfo and taking them down."""

import subprocess


def mount_points_under(root):
    """Every mount point at or below `root`."""
    points = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            # Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
            point = line.split()[4]
            for escaped, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
                point = point.replace(escaped, char)
            if point == root or point.startswith(root.rstrip("/") + "/"):
                points.append(point)
    return points


def unmount_all_under(root):
    """Lazily unmounts every mount at or below `root`, deepest first, until none is left."""
    for _ in range(10):
        points = mount_points_under(root)
        if not points:
            return
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
