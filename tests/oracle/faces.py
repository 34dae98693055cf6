"""The independent face-detection oracle: scikit-image's own LBP cascade detector.

    python faces.py INPUT_DIR

reads an image-search input directory (cascade.xml, settings.txt, images/) and prints one line per
image in image-search's format, `images/NAME: WxH: N faces x,y,w,h ...`, from
`skimage.feature.Cascade.detect_multi_scale` with the same settings. Run it with OMP_NUM_THREADS=1:
the detector's scales run in parallel otherwise, and the grouping depends on the order of hits.
"""

import os
import sys

from skimage import io
from skimage.feature import Cascade


def settings(path):
    s = {"scale_factor": 1.2, "step_ratio": 1.0, "min_size": 60, "max_size": 123,
         "min_neighbours": 4, "intersection": 0.5}
    with open(path) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                key, value = (x.strip() for x in line.split("=", 1))
                s[key] = float(value)
    return s


def images(root):
    out = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.lower().endswith((".png", ".jpg", ".jpeg")):
                full = os.path.join(dirpath, name)
                out.append((os.path.relpath(full, root).replace(os.sep, "/"), full))
    return sorted(out)


def main(input_dir):
    s = settings(os.path.join(input_dir, "settings.txt"))
    detector = Cascade(os.path.join(input_dir, "cascade.xml"))
    for rel, path in images(os.path.join(input_dir, "images")):
        img = io.imread(path)
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[..., :3]
        if img.ndim == 3 and img.shape[2] == 2:
            img = img[..., 0]
        found = detector.detect_multi_scale(
            img=img, scale_factor=s["scale_factor"], step_ratio=s["step_ratio"],
            min_size=(int(s["min_size"]),) * 2, max_size=(int(s["max_size"]),) * 2,
            min_neighbor_number=int(s["min_neighbours"]),
            intersection_score_threshold=s["intersection"])
        boxes = " ".join(f"{d['c']},{d['r']},{d['width']},{d['height']}" for d in found)
        n = len(found)
        line = f"images/{rel}: {img.shape[1]}x{img.shape[0]}: {n} face{'' if n == 1 else 's'} {boxes}"
        print(line.rstrip())


if __name__ == "__main__":
    main(sys.argv[1])
