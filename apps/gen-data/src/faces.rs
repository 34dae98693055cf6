//! image-search inputs: variants of real photos (crops, scales, mirror images, brightness and
//! contrast changes, PNG or JPEG) with and without faces, the LBP face cascade, detector settings,
//! and the ground truth: each image's faces, from boxes labelled by hand on the source photos.
//!
//! The photos and the cascade come from scikit-image's package on PyPI, fetched by
//! `scripts/fetch-third-party` (never committed).

use crate::rng::Rng;
use crate::{Size, write_file};
use std::path::{Path, PathBuf};
use zune_core::bit_depth::BitDepth;
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::{DecoderOptions, EncoderOptions};

/// Where `scripts/fetch-third-party` puts the package's data.
pub fn default_third_party() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/third-party/skimage-data")
}

pub const CASCADE: &str = "lbpcascade_frontalface_opencv.xml";

/// Source photos with faces, and each face's box (x, y, width, height: brows to chin, ear to
/// ear), labelled by hand by looking at the photos.
const WITH_FACES: &[(&str, [usize; 4])] = &[
    // Eileen Collins, NASA portrait.
    ("astronaut.png", [178, 70, 95, 115]),
    // The cameraman, three-quarter view.
    ("camera.png", [180, 100, 75, 95]),
];

/// Source photos without a face.
const WITHOUT_FACES: &[&str] = &[
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "coins.png",
    "moon.png",
    "page.png",
    "text.png",
    "retina.jpg",
    "hubble_deep_field.jpg",
    "brick.png",
    "grass.png",
    "gravel.png",
    "ihc.png",
    "color.png",
];

/// The detector settings written to `settings.txt`: scikit-image's example values, with the
/// window range widened to the faces the variants hold.
pub const SETTINGS: &str = "scale_factor = 1.2\nstep_ratio = 1\nmin_size = 40\nmax_size = 300\nmin_neighbours = 4\nintersection = 0.5\n";
const MIN_FACE: usize = 40;

#[derive(Clone)]
struct Picture {
    width: usize,
    height: usize,
    /// 1 (gray) or 3 (RGB).
    channels: usize,
    pixels: Vec<u8>,
}

fn load(dir: &Path, name: &str) -> Result<Picture, String> {
    let path = dir.join(name);
    let data = std::fs::read(&path).map_err(|e| {
        format!(
            "cannot read {}: {e}. The photos and the face cascade come from the scikit-image package on PyPI: \
             run `bash scripts/fetch-third-party` (it runs `pip download --no-deps scikit-image==0.26.0`), \
             or pass --third-party DIR with the package's skimage/data files",
            path.display()
        )
    })?;
    let bad = |e: String| format!("{}: {e}", path.display());
    let (width, height, space, raw) = if name.ends_with(".png") {
        let opts = DecoderOptions::default().png_set_strip_to_8bit(true);
        let mut d = zune_png::PngDecoder::new_with_options(ZCursor::new(&data), opts);
        d.decode_headers().map_err(|e| bad(format!("{e:?}")))?;
        let (w, h) = d.dimensions().ok_or_else(|| bad("no size".into()))?;
        let space = d.colorspace().ok_or_else(|| bad("no colour space".into()))?;
        (w, h, space, d.decode_raw().map_err(|e| bad(format!("{e:?}")))?)
    } else {
        let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
        let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(&data), opts);
        let raw = d.decode().map_err(|e| bad(format!("{e:?}")))?;
        let (w, h) = d.dimensions().ok_or_else(|| bad("no size".into()))?;
        (w, h, d.output_colorspace().unwrap_or(ColorSpace::RGB), raw)
    };
    let n = space.num_components();
    let channels = if n >= 3 { 3 } else { 1 };
    let pixels = raw.chunks_exact(n).flat_map(|p| p[..channels].to_vec()).collect();
    Ok(Picture { width, height, channels, pixels })
}

fn crop(p: &Picture, x: usize, y: usize, w: usize, h: usize) -> Picture {
    let c = p.channels;
    let mut pixels = Vec::with_capacity(w * h * c);
    for row in y..y + h {
        let start = (row * p.width + x) * c;
        pixels.extend_from_slice(&p.pixels[start..start + w * c]);
    }
    Picture { width: w, height: h, channels: c, pixels }
}

/// Bilinear resampling in 16.16 fixed point.
fn resize(p: &Picture, w: usize, h: usize) -> Picture {
    let c = p.channels;
    let mut pixels = vec![0u8; w * h * c];
    let fx = ((p.width as u64) << 16) / w as u64;
    let fy = ((p.height as u64) << 16) / h as u64;
    for y in 0..h {
        let sy = (y as u64 * fy + fy / 2).saturating_sub(1 << 15);
        let (y0, ty) = (((sy >> 16) as usize).min(p.height - 1), sy & 0xffff);
        let y1 = (y0 + 1).min(p.height - 1);
        for x in 0..w {
            let sx = (x as u64 * fx + fx / 2).saturating_sub(1 << 15);
            let (x0, tx) = (((sx >> 16) as usize).min(p.width - 1), sx & 0xffff);
            let x1 = (x0 + 1).min(p.width - 1);
            for k in 0..c {
                let at = |xx: usize, yy: usize| u64::from(p.pixels[(yy * p.width + xx) * c + k]);
                let top = at(x0, y0) * (0x10000 - tx) + at(x1, y0) * tx;
                let bottom = at(x0, y1) * (0x10000 - tx) + at(x1, y1) * tx;
                let v = (top * (0x10000 - ty) + bottom * ty + (1 << 31)) >> 32;
                pixels[(y * w + x) * c + k] = v.min(255) as u8;
            }
        }
    }
    Picture { width: w, height: h, channels: c, pixels }
}

fn mirror(p: &mut Picture) {
    let c = p.channels;
    for row in p.pixels.chunks_exact_mut(p.width * c) {
        for x in 0..p.width / 2 {
            for k in 0..c {
                row.swap(x * c + k, (p.width - 1 - x) * c + k);
            }
        }
    }
}

/// `v -> (v - 128) * contrast / 100 + 128 + brightness`, clamped.
fn tone(p: &mut Picture, contrast: i32, brightness: i32) {
    for v in &mut p.pixels {
        *v = ((i32::from(*v) - 128) * contrast / 100 + 128 + brightness).clamp(0, 255) as u8;
    }
}

fn encode(p: &Picture, jpeg: bool) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    if jpeg {
        let kind = if p.channels == 3 { jpeg_encoder::ColorType::Rgb } else { jpeg_encoder::ColorType::Luma };
        jpeg_encoder::Encoder::new(&mut out, 90)
            .encode(&p.pixels, p.width as u16, p.height as u16, kind)
            .map_err(|e| format!("JPEG encoding failed: {e}"))?;
    } else {
        let space = if p.channels == 3 { ColorSpace::RGB } else { ColorSpace::Luma };
        let opts = EncoderOptions::new(p.width, p.height, space, BitDepth::Eight);
        zune_png::PngEncoder::new(&p.pixels, opts).encode(&mut out).map_err(|e| format!("PNG encoding failed: {e:?}"))?;
    }
    Ok(out)
}

/// A crop window of `w x h` in a `width x height` photo that holds `face` whole (`keep`) or
/// misses it entirely (`!keep`), or `None` when there is none.
fn place(rng: &mut Rng, width: usize, height: usize, w: usize, h: usize, face: Option<[usize; 4]>, keep: bool) -> Option<(usize, usize)> {
    let Some([fx, fy, fw, fh]) = face else {
        return Some((rng.range(0, width - w), rng.range(0, height - h)));
    };
    if keep {
        let (x_lo, x_hi) = ((fx + fw).saturating_sub(w), fx.min(width - w));
        let (y_lo, y_hi) = ((fy + fh).saturating_sub(h), fy.min(height - h));
        return (x_lo <= x_hi && y_lo <= y_hi).then(|| (rng.range(x_lo, x_hi), rng.range(y_lo, y_hi)));
    }
    for _ in 0..64 {
        let (x, y) = (rng.range(0, width - w), rng.range(0, height - h));
        if x >= fx + fw || x + w <= fx || y >= fy + fh || y + h <= fy {
            return Some((x, y));
        }
    }
    None
}

/// Reads the LBP face cascade from scikit-image's data files.
pub fn read_cascade(third_party: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(third_party.join(CASCADE)).map_err(|e| {
        format!(
            "cannot read {}: {e}. It comes from the scikit-image package on PyPI: run `bash scripts/fetch-third-party`",
            third_party.join(CASCADE).display()
        )
    })
}

/// One generated image: its encoded bytes and what it holds.
#[derive(Debug, Clone)]
pub struct Variant {
    /// JPEG (`.jpg`) or PNG (`.png`).
    pub jpeg: bool,
    pub bytes: Vec<u8>,
    /// The source photo's file name.
    pub source: &'static str,
    /// The faces it holds (x, y, width, height), from the hand-labelled boxes.
    pub faces: Vec<[usize; 4]>,
}

impl Variant {
    /// The file extension its encoding calls for.
    pub fn ext(&self) -> &'static str {
        if self.jpeg { "jpg" } else { "png" }
    }
}

/// How many images image-search's input holds at `size`.
pub fn count(size: Size) -> usize {
    match size {
        Size::Small => 1,
        Size::Medium => 10,
        Size::Large => 100,
    }
}

/// Makes image-search's images at `size`, in order, giving each to `each` with its index (from
/// 0) as soon as it is made: the same images whoever writes them.
pub fn variants(size: Size, seed: u64, third_party: &Path, mut each: impl FnMut(usize, Variant) -> Result<(), String>) -> Result<(), String> {
    let mut rng = Rng::new(seed).fork("image-search").fork(size.name());
    for i in 0..count(size) {
        // Every other image comes from a photo with a face (the first always does).
        let (source, face) = if i % 2 == 0 || rng.chance(10) {
            let (name, face) = WITH_FACES[(i / 2) % WITH_FACES.len()];
            (name, Some(face))
        } else {
            (*rng.pick(WITHOUT_FACES), None)
        };
        let photo = load(third_party, source)?;
        // Most face photos keep the face; some crops cut it away (an image without a face).
        let keep = i == 0 || rng.chance(80);
        let (mut w, mut h, mut at) = (photo.width, photo.height, None);
        for _ in 0..32 {
            w = photo.width * rng.range(55, 100) / 100;
            h = photo.height * rng.range(55, 100) / 100;
            at = place(&mut rng, photo.width, photo.height, w, h, face, keep);
            if at.is_some() {
                break;
            }
        }
        let (x, y) = at.unwrap_or((0, 0));
        let (w, h) = if at.is_some() { (w, h) } else { (photo.width, photo.height) };
        let inside = face.is_some() && (at.is_none() || keep);
        let mut pic = crop(&photo, x, y, w, h);
        let scale = rng.range(75, 150);
        let (nw, nh) = (w * scale / 100, h * scale / 100);
        pic = resize(&pic, nw, nh);
        let flip = rng.chance(50);
        if flip {
            mirror(&mut pic);
        }
        if rng.chance(60) {
            let (contrast, brightness) = (rng.range(75, 125) as i32, rng.range(0, 60) as i32 - 30);
            tone(&mut pic, contrast, brightness);
        }
        let jpeg = rng.chance(35);
        let bytes = encode(&pic, jpeg)?;

        let mut faces = Vec::new();
        if let (true, Some([fx, fy, fw, fh])) = (inside, face) {
            let s = |v: usize| v * scale / 100;
            let (bx, by, bw, bh) = (s(fx - x), s(fy - y), s(fw), s(fh));
            let bx = if flip { nw - bx - bw } else { bx };
            if bw >= MIN_FACE {
                faces.push([bx, by, bw, bh]);
            }
        }
        each(i, Variant { jpeg, bytes, source, faces })?;
    }
    Ok(())
}

pub fn generate(size: Size, seed: u64, out: &Path, third_party: &Path) -> Result<serde_json::Value, String> {
    let cascade = read_cascade(third_party)?;
    write_file(&out.join("cascade.xml"), &cascade)?;
    write_file(&out.join("settings.txt"), SETTINGS.as_bytes())?;

    let mut truth = Vec::new();
    let mut with_faces = 0;
    variants(size, seed, third_party, |i, v| {
        let file = format!("img{:04}.{}", i + 1, v.ext());
        write_file(&out.join("images").join(&file), &v.bytes)?;
        with_faces += usize::from(!v.faces.is_empty());
        truth.push(serde_json::json!({ "file": format!("images/{file}"), "source": v.source, "faces": v.faces }));
        Ok(())
    })?;
    Ok(serde_json::json!({ "images": count(size), "with_faces": with_faces, "truth": truth }))
}
