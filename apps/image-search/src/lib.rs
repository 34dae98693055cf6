//! image-search: finds the images in a directory that contain faces, with a published OpenCV LBP
//! face cascade (`lbpcascade_frontalface_opencv.xml`, as scikit-image ships it) run as a
//! multi-scale sliding-window detector over the integral image of each decoded PNG or JPEG.
//!
//! A plain program: it knows nothing of clonecloud, and builds natively and for wasm32-wasip1.
//! Pixels and sums are integers and the cascade's stage sums are `f32` additions, so the report is
//! the same bytes on every platform.

pub mod cascade;
pub mod image;
pub mod xml;

use cascade::{Cascade, Params};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Reads `settings.txt` (`key = value`, `#` comments); missing keys keep scikit-image's
/// documented example values.
pub fn settings(text: &str) -> Result<Params, String> {
    let mut p = Params { scale_factor: 1.2, step_ratio: 1.0, min_size: 60, max_size: 123, min_neighbours: 4, intersection: 0.5 };
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |what: &str| format!("settings.txt:{}: {what}", n + 1);
        let (key, value) = line.split_once('=').ok_or_else(|| bad("expected `key = value`"))?;
        let (key, value) = (key.trim(), value.trim());
        let float = |min: f32| value.parse::<f32>().ok().filter(|v| v.is_finite() && *v > min).ok_or_else(|| bad(&format!("{key} must be a number above {min}")));
        let int = || value.parse::<u32>().ok().filter(|&v| v > 0).ok_or_else(|| bad(&format!("{key} must be a whole number above 0")));
        match key {
            "scale_factor" => p.scale_factor = float(1.0)?,
            "step_ratio" => p.step_ratio = float(0.0)?,
            "min_size" => p.min_size = int()?,
            "max_size" => p.max_size = int()?,
            "min_neighbours" => p.min_neighbours = int()? as usize,
            "intersection" => p.intersection = float(0.0)?,
            other => {
                return Err(bad(&format!(
                    "unknown setting `{other}` (known: scale_factor, step_ratio, min_size, max_size, min_neighbours, intersection)"
                )));
            }
        }
    }
    if p.max_size <= p.min_size {
        return Err("settings.txt: max_size must be larger than min_size".into());
    }
    Ok(p)
}

/// The image files under `dir` (`.png`, `.jpg`, `.jpeg`, any case), sorted by relative path:
/// each as its path relative to `dir` (`/`-separated) and its full path.
pub fn images(dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    fn go(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), String> {
        for entry in fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))? {
            let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let kind = entry.file_type().map_err(|e| format!("cannot stat {rel}: {e}"))?;
            let lower = name.to_ascii_lowercase();
            if kind.is_dir() {
                go(&entry.path(), &rel, out)?;
            } else if [".png", ".jpg", ".jpeg"].iter().any(|e| lower.ends_with(e)) {
                out.push((rel, entry.path()));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    go(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

/// What a search needs, read from `INPUT_DIR`: the cascade, the detector settings and the images.
#[derive(Debug, Clone)]
pub struct Input {
    pub cascade: Cascade,
    pub params: Params,
    /// The images under `INPUT_DIR/images`, as [`images`] lists them.
    pub files: Vec<(String, PathBuf)>,
}

/// Reads `INPUT_DIR`'s cascade.xml and settings.txt and lists `INPUT_DIR/images`; an error is
/// the message `image-search` prints after its name.
pub fn load(input: &Path) -> Result<Input, String> {
    let read = |name: &str, what: &str| {
        fs::read_to_string(input.join(name)).map_err(|e| format!("cannot read {name} ({what}) in {}: {e}", input.display()))
    };
    let cascade = Cascade::parse(&read("cascade.xml", "the LBP face cascade")?).map_err(|e| format!("cascade.xml: {e}"))?;
    let params = settings(&read("settings.txt", "the detector settings")?)?;
    let dir = input.join("images");
    if !dir.is_dir() {
        return Err(format!("{} is not a directory: the images to search go there", dir.display()));
    }
    let files = images(&dir)?;
    Ok(Input { cascade, params, files })
}

/// The report's first line (without its newline): the cascade and the settings.
pub fn header(cascade: &Cascade, params: &Params) -> String {
    format!(
        "cascade: LBP {}x{}, {} stages, {} features; windows {}..{} px, scale x{}, step ratio {}, min neighbours {}",
        cascade.width,
        cascade.height,
        cascade.stages(),
        cascade.features(),
        params.min_size,
        params.max_size,
        params.scale_factor,
        params.step_ratio,
        params.min_neighbours
    )
}

/// One image's outcome: its report line and what the summary counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Searched {
    /// `images/REL: WxH: N faces x,y,w,h …` or `images/REL: unreadable: WHY`, without its newline
    /// (trailing blanks are trimmed by [`report`]).
    pub line: String,
    /// The faces found (0 when unreadable).
    pub faces: usize,
    /// Whether the file could be read and decoded.
    pub readable: bool,
}

/// Searches one image: reads `path`, decodes it to gray, builds its integral image and runs the
/// cascade. `rel` is its path under `images/`, as the report names it.
pub fn search_one(cascade: &Cascade, params: &Params, rel: &str, path: &Path) -> Searched {
    let gray = fs::read(path).map_err(|e| e.to_string()).and_then(|d| image::decode(&d));
    let gray = match gray {
        Ok(g) => g,
        Err(e) => return Searched { line: format!("images/{rel}: unreadable: {e}"), faces: 0, readable: false },
    };
    let found = cascade.detect(&image::Integral::new(&gray), params);
    let boxes: Vec<String> = found.iter().map(|b| format!("{},{},{},{}", b.x, b.y, b.width, b.height)).collect();
    let line = format!("images/{rel}: {}x{}: {} face{} {}", gray.width, gray.height, found.len(), if found.len() == 1 { "" } else { "s" }, boxes.join(" "));
    Searched { line, faces: found.len(), readable: true }
}

/// The report's last line (without its newline), from every image's outcome.
pub fn summary(searched: &[Searched]) -> String {
    let with_faces = searched.iter().filter(|s| s.faces > 0).count();
    let faces: usize = searched.iter().map(|s| s.faces).sum();
    let unreadable = searched.iter().filter(|s| !s.readable).count();
    format!("images: {}, with faces: {with_faces}, faces: {faces}, unreadable: {unreadable}", searched.len())
}

/// The whole report: the header, a line per image in the order given (the images' path order),
/// a blank line and the summary; lines end without trailing blanks.
pub fn report(cascade: &Cascade, params: &Params, searched: &[Searched]) -> String {
    let mut r = header(cascade, params) + "\n";
    for s in searched {
        r.push_str(&s.line);
        r.push('\n');
    }
    // Lines end without trailing blanks.
    let mut r = r.lines().map(str::trim_end).collect::<Vec<_>>().join("\n") + "\n";
    let _ = writeln!(r, "\n{}", summary(searched));
    r
}

/// Reads `INPUT_DIR` (cascade.xml, settings.txt, images/) and returns the report: a line per
/// image with its size and the faces found (`x,y,w,h` boxes), then a summary.
pub fn run(input: &Path) -> Result<String, String> {
    let Input { cascade, params, files } = load(input)?;
    let searched: Vec<Searched> = files.iter().map(|(rel, path)| search_one(&cascade, &params, rel, path)).collect();
    Ok(report(&cascade, &params, &searched))
}
