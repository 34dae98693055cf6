//! gen-data: writes the input set of one workload at one size, deterministically from a seed.
//!
//! `gen-data --app virus-scan|image-search|behavior-profile|photo-tagger --size small|medium|large --out DIR`
//! writes DIR, the app's INPUT_DIR, and `DIR/truth.json`, the ground truth (which the apps never
//! read). The same seed writes the same bytes on every machine. photo-tagger's DIR holds its
//! MODEL_DIR (`model/`), the camera's frames (`camera/`) and the GPS track (`track.csv`).

mod behavior;
mod faces;
mod rng;
mod tagger;
mod virus;

use clap::{Parser, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum App {
    VirusScan,
    ImageSearch,
    BehaviorProfile,
    PhotoTagger,
}

/// The paper's three input sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Size {
    Small,
    Medium,
    Large,
}

impl Size {
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Medium => "medium",
            Size::Large => "large",
        }
    }
}

#[derive(Debug, Parser)]
#[command(version, about = "Writes a workload's input directory and its ground truth (truth.json).")]
struct Args {
    /// Which workload.
    #[arg(long, value_enum)]
    app: App,
    /// The paper's input size.
    #[arg(long, value_enum)]
    size: Size,
    /// The input directory to write (created; an earlier gen-data output there is replaced).
    #[arg(long)]
    out: PathBuf,
    /// The seed every byte is drawn from.
    #[arg(long, default_value_t = 2011)]
    seed: u64,
    /// image-search and photo-tagger only: the directory with scikit-image's data files (the
    /// photos and the face cascade); default: where `scripts/fetch-third-party` puts them,
    /// target/third-party/skimage-data.
    #[arg(long)]
    third_party: Option<PathBuf>,
}

/// Writes `data` to `path`, creating its parent directories.
pub fn write_file(path: &Path, data: &[u8]) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::write(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Makes `out` an empty directory, refusing to clear one that gen-data did not write.
fn prepare(out: &Path) -> Result<(), String> {
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(|e| format!("cannot list {}: {e}", out.display()))?;
        if entries.next().is_some() && !out.join("truth.json").exists() {
            return Err(format!(
                "{} is not empty and holds no truth.json: give --out an empty or new directory",
                out.display()
            ));
        }
        std::fs::remove_dir_all(out).map_err(|e| format!("cannot clear {}: {e}", out.display()))?;
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))
}

fn generate(args: &Args) -> Result<(), String> {
    prepare(&args.out)?;
    let details = match args.app {
        App::VirusScan => virus::generate(args.size, args.seed, &args.out)?,
        App::BehaviorProfile => behavior::generate(args.size, args.seed, &args.out)?,
        App::ImageSearch => {
            let dir = args.third_party.clone().unwrap_or_else(faces::default_third_party);
            faces::generate(args.size, args.seed, &args.out, &dir)?
        }
        App::PhotoTagger => {
            let dir = args.third_party.clone().unwrap_or_else(faces::default_third_party);
            tagger::generate(args.size, args.seed, &args.out, &dir)?
        }
    };
    let app = args.app.to_possible_value().expect("no skipped values");
    let mut truth = serde_json::json!({ "app": app.get_name(), "size": args.size.name(), "seed": args.seed });
    truth.as_object_mut().expect("an object").extend(details.as_object().cloned().unwrap_or_default());
    let text = serde_json::to_string_pretty(&truth).map_err(|e| e.to_string())? + "\n";
    write_file(&args.out.join("truth.json"), text.as_bytes())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match generate(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-data: {e}");
            ExitCode::FAILURE
        }
    }
}
