//! OpenCV LBP cascades (the `opencv_storage` XML format) and the multi-scale sliding-window search
//! with multi-block LBP features (Zhang et al., ICB 2007), following the detector scikit-image
//! ships (`skimage.feature.Cascade.detect_multi_scale`): the window grows by `scale_factor` from
//! `min_size` to `max_size`, moves by `round(scale * step_ratio)` pixels, and the hits are grouped
//! into clusters by overlap; a cluster of at least `min_neighbours` hits is one detection.

use crate::image::Integral;
use crate::xml::{self, Element};

/// A multi-block LBP feature: nine `width x height` blocks whose top-left corner is (`x`, `y`)
/// in the 24x24 (or whatever the cascade says) training window.
#[derive(Debug, Clone, Copy)]
struct Feature {
    x: u32,
    y: u32,
    width: u32,
    height: u32,
}

#[derive(Debug, Clone)]
struct Stump {
    feature: usize,
    /// 256 bits: whether each LBP code sends the stump to its left leaf.
    lut: [u32; 8],
    left: f32,
    right: f32,
}

#[derive(Debug, Clone)]
struct Stage {
    threshold: f32,
    stumps: Vec<Stump>,
}

#[derive(Debug, Clone)]
pub struct Cascade {
    pub width: u32,
    pub height: u32,
    stages: Vec<Stage>,
    features: Vec<Feature>,
}

/// A detection window, in pixels of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: i64,
    pub y: i64,
    pub width: i64,
    pub height: i64,
}

#[derive(Debug, Clone)]
pub struct Params {
    pub scale_factor: f32,
    pub step_ratio: f32,
    pub min_size: u32,
    pub max_size: u32,
    pub min_neighbours: usize,
    pub intersection: f32,
}

/// Stage sums within this of the threshold still pass (scikit-image's default `eps`).
const EPS: f32 = 1e-5;

fn numbers<T: std::str::FromStr>(el: &Element, what: &str) -> Result<Vec<T>, String> {
    el.text
        .split_whitespace()
        .map(|t| t.parse().map_err(|_| format!("<{}> of {what}: `{t}` is not a number", el.name)))
        .collect()
}

fn one<T: std::str::FromStr>(parent: &Element, name: &str) -> Result<T, String> {
    let el = parent.child(name).ok_or_else(|| format!("<{}> has no <{name}>", parent.name))?;
    let mut v = numbers::<T>(el, name)?;
    match v.len() {
        1 => Ok(v.pop().expect("one")),
        n => Err(format!("<{name}> holds {n} numbers, expected one")),
    }
}

impl Cascade {
    /// Reads a cascade in OpenCV's XML format (`cv::CascadeClassifier`'s "new" format).
    pub fn parse(text: &str) -> Result<Cascade, String> {
        let root = xml::parse(text)?;
        let cascade = root
            .child("cascade")
            .or_else(|| root.children.first())
            .ok_or_else(|| "no <cascade> element: not an OpenCV cascade file".to_string())?;
        let kind = cascade.child("featureType").map(|e| e.text.trim()).unwrap_or("");
        if kind != "LBP" {
            return Err(format!(
                "feature type `{kind}`: only LBP cascades are supported (such as lbpcascade_frontalface_opencv.xml)"
            ));
        }
        let width: u32 = one(cascade, "width")?;
        let height: u32 = one(cascade, "height")?;
        let features = cascade
            .child("features")
            .ok_or("the cascade has no <features>")?
            .children
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let rect = f.child("rect").ok_or_else(|| format!("feature {i} has no <rect>"))?;
                match numbers::<u32>(rect, "a feature")?.as_slice() {
                    &[x, y, w, h] if w > 0 && h > 0 && x + 3 * w <= width && y + 3 * h <= height => {
                        Ok(Feature { x, y, width: w, height: h })
                    }
                    other => Err(format!("feature {i}: rect {other:?} does not fit the {width}x{height} window")),
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut stages = Vec::new();
        for (s, st) in cascade.child("stages").ok_or("the cascade has no <stages>")?.children.iter().enumerate() {
            let threshold: f32 = one(st, "stageThreshold")?;
            let weak = st.child("weakClassifiers").ok_or_else(|| format!("stage {s} has no <weakClassifiers>"))?;
            let mut stumps = Vec::new();
            for (w, wc) in weak.children.iter().enumerate() {
                let at = || format!("stage {s}, classifier {w}");
                let nodes = numbers::<i64>(wc.child("internalNodes").ok_or_else(|| format!("{}: no <internalNodes>", at()))?, "internalNodes")?;
                let leaves = numbers::<f32>(wc.child("leafValues").ok_or_else(|| format!("{}: no <leafValues>", at()))?, "leafValues")?;
                // left, right, feature index, then the 8 words of the categorical split.
                if nodes.len() != 11 || leaves.len() != 2 {
                    return Err(format!("{}: a stump needs 11 internal-node numbers and 2 leaves (is this a tree cascade?)", at()));
                }
                let (feature, lut) = (nodes[2], &nodes[3..]);
                let feature = usize::try_from(feature).ok().filter(|&f| f < features.len()).ok_or_else(|| format!("{}: feature {feature} does not exist", at()))?;
                let mut words = [0u32; 8];
                for (dst, &v) in words.iter_mut().zip(lut) {
                    *dst = v as i32 as u32;
                }
                stumps.push(Stump { feature, lut: words, left: leaves[0], right: leaves[1] });
            }
            stages.push(Stage { threshold, stumps });
        }
        if stages.is_empty() {
            return Err("the cascade has no stage".into());
        }
        Ok(Cascade { width, height, stages, features })
    }

    pub fn stages(&self) -> usize {
        self.stages.len()
    }

    pub fn features(&self) -> usize {
        self.features.len()
    }

    /// Every detection in the image, grouped.
    pub fn detect(&self, img: &Integral, p: &Params) -> Vec<Rect> {
        let mut hits = Vec::new();
        // The first scale makes the window `min_size` wide (never below the training size); each
        // next one is `scale_factor` times larger, up to (not including) `max_size`.
        let mut scale = (p.min_size as f32 / self.width as f32).max(1.0);
        // Per-scale feature geometry: the 16 grid corners of each feature, as offsets into the
        // integral image relative to the window's corner.
        let mut corners: Vec<[usize; 16]> = vec![[0; 16]; self.features.len()];
        while (self.width as f32 * scale) < p.max_size as f32 {
            let win_w = (self.width as f32 * scale) as usize;
            let win_h = (self.height as f32 * scale) as usize;
            let step = ((scale * p.step_ratio).round() as usize).max(1);
            if win_w > img.width || win_h > img.height {
                break;
            }
            for (f, c) in self.features.iter().zip(corners.iter_mut()) {
                let (x, y) = ((f.x as f32 * scale) as usize, (f.y as f32 * scale) as usize);
                let (w, h) = ((f.width as f32 * scale) as usize, (f.height as f32 * scale) as usize);
                for i in 0..4 {
                    for j in 0..4 {
                        c[i * 4 + j] = (y + i * h) * img.stride + x + j * w;
                    }
                }
            }
            let (max_row, max_col) = (img.height - win_h, img.width - win_w);
            let mut row = 0;
            while row < max_row {
                let mut col = 0;
                while col < max_col {
                    if self.classify(img, row * img.stride + col, &corners) {
                        hits.push(Rect { x: col as i64, y: row as i64, width: win_w as i64, height: win_h as i64 });
                    }
                    col += step;
                }
                row += step;
            }
            scale *= p.scale_factor;
        }
        group(&hits, p.intersection, p.min_neighbours)
    }

    fn classify(&self, img: &Integral, origin: usize, corners: &[[usize; 16]]) -> bool {
        let s = &img.sums;
        for stage in &self.stages {
            let mut points = 0.0f32;
            for stump in &stage.stumps {
                let c = &corners[stump.feature];
                let v = |k: usize| s[origin + c[k]];
                // Block (i, j) spans corners (i, j) .. (i + 1, j + 1); sums wrap, differences don't.
                let block = |i: usize, j: usize| {
                    v((i + 1) * 4 + j + 1).wrapping_sub(v(i * 4 + j + 1)).wrapping_sub(v((i + 1) * 4 + j)).wrapping_add(v(i * 4 + j))
                };
                let center = block(1, 1);
                // Neighbours clockwise from the top left, the first in the highest bit.
                let code = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]
                    .iter()
                    .fold(0usize, |acc, &(i, j)| acc << 1 | usize::from(block(i, j) >= center));
                let bit = (stump.lut[code >> 5] >> (code & 31)) & 1;
                points += if bit == 1 { stump.left } else { stump.right };
            }
            if points < stage.threshold - EPS {
                return false;
            }
        }
        true
    }
}

/// Clusters hits greedily: each joins the cluster whose mean it overlaps most (intersection over
/// the smaller area above `threshold`) or starts a new one; clusters of at least `min_neighbours`
/// hits give their mean rectangle.
pub fn group(hits: &[Rect], threshold: f32, min_neighbours: usize) -> Vec<Rect> {
    struct Cluster {
        sum: Rect,
        count: i64,
    }
    let mean = |c: &Cluster| Rect {
        x: c.sum.x / c.count,
        y: c.sum.y / c.count,
        width: c.sum.width / c.count,
        height: c.sum.height / c.count,
    };
    let score = |a: &Rect, b: &Rect| {
        let w = (a.x + a.width).min(b.x + b.width) - a.x.max(b.x);
        let h = (a.y + a.height).min(b.y + b.height) - a.y.max(b.y);
        let inter = (w.max(0) * h.max(0)) as f32;
        inter / (a.width * a.height).min(b.width * b.height) as f32
    };
    let mut clusters: Vec<Cluster> = Vec::new();
    for hit in hits {
        let mut best = None;
        let mut best_score = threshold;
        for (i, c) in clusters.iter().enumerate() {
            let s = score(hit, &mean(c));
            if s > best_score {
                best_score = s;
                best = Some(i);
            }
        }
        match best {
            Some(i) => {
                let c = &mut clusters[i];
                c.sum = Rect { x: c.sum.x + hit.x, y: c.sum.y + hit.y, width: c.sum.width + hit.width, height: c.sum.height + hit.height };
                c.count += 1;
            }
            None => clusters.push(Cluster { sum: *hit, count: 1 }),
        }
    }
    clusters.iter().filter(|c| c.count as usize >= min_neighbours).map(mean).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_overlapping_hits_and_drops_lonely_ones() {
        let r = |x, y, s| Rect { x, y, width: s, height: s };
        let hits = [r(10, 10, 40), r(12, 11, 40), r(11, 9, 44), r(9, 10, 40), r(200, 200, 40)];
        assert_eq!(group(&hits, 0.5, 4), vec![Rect { x: 10, y: 10, width: 41, height: 41 }]);
        assert_eq!(group(&hits, 0.5, 1).len(), 2);
    }

    #[test]
    fn refuses_what_is_not_an_lbp_cascade() {
        assert!(Cascade::parse("<opencv_storage><cascade><featureType>HAAR</featureType></cascade></opencv_storage>").unwrap_err().contains("only LBP"));
        assert!(Cascade::parse("not xml").is_err());
    }
}
