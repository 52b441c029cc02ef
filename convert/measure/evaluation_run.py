"""``maskdoor eval``: score detectors on an annotated dataset and print them side by side."""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np

from convert.measure.dataset import add_unlabelled, load_voc_dataset
from edge.defaults import PHOTOS
from edge.errors import MaskdoorError
from convert.measure.evaluate import DetectionRecords
from edge.images import read_image

LOW_THRESHOLD = 0.05  # detections kept for AP; recall/precision use each detector's own default


def score_detector(detector, samples, default_threshold: float) -> dict:
    rec = DetectionRecords()
    times = []
    for s in samples:
        image = read_image(s.image)
        t0 = time.perf_counter()
        faces = detector.detect(image, threshold=LOW_THRESHOLD)
        times.append((time.perf_counter() - t0) * 1000)
        rec.add_faces(s, faces)
    out = rec.summary(default_threshold)
    out["ms_median"] = round(statistics.median(times), 2) if times else None
    out["recall_by_class"] = {}
    labels = np.array(rec.gt_label, dtype=object)
    found = np.array(rec.gt_best_score) >= default_threshold
    widths = np.array(rec.gt_width)
    for cls in sorted(set(rec.gt_label) - {None}):
        k = (labels == cls) & (widths >= 40)
        out["recall_by_class"][f"{cls}_>=40"] = round(float(found[k].mean()), 4) if k.any() else None
    return out


def format_table(rows: dict[str, dict]) -> str:
    cols = ["thr", "faces", "all", "<40", "40-80", "80-160", ">=160", ">=40", "door", "prec",
            "prec>=40", "prec.door", "AP", "AP>=40", "ms"]
    lines = ["detector".ljust(34) + "".join(c.rjust(9) for c in cols)]
    for name, r in rows.items():
        rc = r["recall"]
        vals = [r["threshold"], r["faces"], rc["all"], rc["<40"], rc["40-80"], rc["80-160"],
                rc[">=160"], rc[">=40"], rc["door"], r["precision"], r["precision_>=40"],
                r["precision_door"], r["ap"], r["ap_>=40"], r["ms_median"]]
        lines.append(name.ljust(34) + "".join(
            (f"{v:.3f}" if isinstance(v, float) else str(v)).rjust(9) for v in vals))
    lines.append("columns <40 .. >=40 and all: recall at IoU >= 0.5 by face width in pixels; "
                 "door: faces at least 10% of the image width (close enough for the door to "
                 "warn); prec>=40 and prec.door ignore detections outside the range (COCO rule); "
                 "ms: median detector time per image")
    return "\n".join(lines)


def format_audited(rows: dict[str, dict], path, faces: int) -> str:
    lines = [f"audited with {path}: {faces} visible faces the annotation lacks; a detection on "
             "one is neither true nor false positive below (faces >= 40 px)"]
    for name, r in rows.items():
        a = r.get("audited")
        if a:
            lines.append(f"  {name}: precision {r['precision_>=40']:.3f} -> {a['precision_>=40']:.3f}"
                         f", AP {r['ap_>=40']:.3f} -> {a['ap_>=40']:.3f} "
                         f"({a['detections_on_them']} detections on unlabelled faces)")
    return "\n".join(lines)


def run_eval(args) -> int:
    from edge.inference.detectors import load_detector
    from convert.measure.peers import AizooDetector, OpenCVRes10, SeedMaskClassifier, find_weights_dir

    split = None if args.split == "all" else args.split
    samples = load_voc_dataset(args.dataset, split)
    if args.limit:
        samples = samples[:args.limit]
    unlabelled_used = None
    if args.unlabelled is not None:
        samples, unlabelled_used = add_unlabelled(samples, args.unlabelled)
    ours = load_detector(args.model, threads=args.threads, edgetpu=args.edgetpu)
    thr = ours.score_threshold if args.threshold is None else args.threshold
    ours_name = f"maskdoor {ours.describe()}"
    rows = {ours_name: score_detector(ours, samples, thr)}
    peers_dir = args.peers if args.peers is not None else find_weights_dir(args.dataset)
    use_peers = peers_dir is not None and str(peers_dir) != "none"
    res10 = None
    if use_peers:
        try:
            res10 = OpenCVRes10(peers_dir, threads=args.threads)
            rows["opencv res10 (float)"] = score_detector(res10, samples, 0.5)
        except MaskdoorError as exc:
            print(f"maskdoor eval: side-by-side res10 skipped: {exc}", file=sys.stderr)
    report = {"dataset": str(args.dataset), "split": args.split, "images": len(samples),
              "iou": 0.5, "detectors": rows}
    if unlabelled_used is not None:
        report["unlabelled"] = {"file": str(args.unlabelled), "faces": unlabelled_used}

    from edge.inference.classifier import optional_classifier
    classifier = optional_classifier(args.classifier, args.threads, args.edgetpu,
                                     default=PHOTOS.classifier)
    if classifier is not None:
        from convert.measure.pipeline_eval import (crop_scores, crop_summary, format_pipeline_table, roc,
                                        run_pipeline, write_roc_png)
        pipes = {"maskdoor int8 detector + int8 classifier":
                 run_pipeline(ours.detect, classifier.classify, samples, thr)}
        crops = {"maskdoor int8 classifier": crop_scores(classifier.classify, samples)}
        if use_peers:
            seed = _optional(lambda: SeedMaskClassifier(), "seed classifier")
            if seed is not None and res10 is not None:
                pipes["seed: res10 float + keras 224"] = run_pipeline(res10.detect, seed.classify,
                                                                      samples, 0.5)
                crops["seed keras classifier"] = crop_scores(seed.classify, samples)
            aizoo = _optional(lambda: AizooDetector(peers_dir, threads=args.threads), "AIZOO")
            if aizoo is not None:
                pipes["aizoo ssd (float)"] = run_pipeline(aizoo.detect, None, samples, 0.5)
        report["pipelines"] = pipes
        report["classifier_on_ground_truth_crops"] = {
            name: crop_summary(g, p) for name, (g, p, _) in crops.items()}
        curves = {name: roc(g, sc) for name, (g, _, sc) in crops.items()}
        report["roc_auc"] = {name: round(c[2], 4) for name, c in curves.items()}
        if args.roc:
            write_roc_png(curves, args.roc)
            report["roc_png"] = str(args.roc)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{args.dataset} split={args.split}: {len(samples)} images, IoU >= 0.5")
    print(format_table(rows))
    if unlabelled_used is not None:
        print(format_audited(rows, args.unlabelled, unlabelled_used))
    if classifier is not None:
        print()
        print(format_pipeline_table(report["pipelines"]))
        print("unm.rec: unmasked (without/incorrect) faces found and flagged; mask.FA: masked faces "
              "found but flagged; inc.: incorrect_mask verdicts among found faces; door.unm, "
              "door.FA: the same for faces at least 10% of the image width")
        for name, r in report["pipelines"].items():
            if "audited" in r:
                print(f"audited (unlabelled faces ignored), {name}: AP unmasked >= 40 "
                      f"{r['ap_unmasked_>=40']:.3f} -> {r['audited']['ap_unmasked_>=40']:.3f}, "
                      f"AP masked >= 40 {r['ap_masked_>=40']:.3f} -> "
                      f"{r['audited']['ap_masked_>=40']:.3f}")
        for name, c in report["classifier_on_ground_truth_crops"].items():
            print(f"{name} on ground-truth crops: {c['crops']} crops, 3-class accuracy "
                  f"{c['accuracy_3class']:.4f}, mask vs not {c['accuracy_mask_vs_not']:.4f}, "
                  f"ROC AUC {report['roc_auc'][name]:.4f}")
        conf = report["pipelines"][next(iter(report["pipelines"]))][">=40"]["confusion"]
        print("confusion (maskdoor, >= 40 px; rows: annotation, columns: verdict, '-' = missed):")
        print("".ljust(16) + "".join(str(k or "-").rjust(16) for k in next(iter(conf.values()))))
        for g, row in conf.items():
            print(g.ljust(16) + "".join(str(v).rjust(16) for v in row.values()))
        if args.roc:
            print(f"ROC curve written to {args.roc}")
    return 0


def _optional(make, what: str):
    try:
        return make()
    except (MaskdoorError, OSError) as exc:
        print(f"maskdoor eval: {what} skipped: {exc}", file=sys.stderr)
        return None
