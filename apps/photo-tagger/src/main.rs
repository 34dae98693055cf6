//! `photo-tagger MODEL_DIR`: see the library's documentation. MODEL_DIR holds `cascade.xml` and
//! `settings.txt` (as image-search's input does); the frames and the fixes come from the device
//! (`clonecloud run --camera DIR --gps TRACK.csv`, or natively `CLONECLOUD_CAMERA=DIR
//! CLONECLOUD_GPS=TRACK.csv`). Exit status: 0 when every frame was reported (an undecodable frame
//! is reported on its line), 2 for a usage, model or device error, 1 when stdout fails.

use clonecloud_device_api as device;
use photo_tagger::{Totals, capture_all, detect, faces_text, frame_line, load_model};
use std::io::Write;
use std::process::ExitCode;

const NAME: &str = "photo-tagger";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, model_dir] = args.as_slice() else {
        eprintln!("usage: {NAME} MODEL_DIR   (cascade.xml, settings.txt; frames from the camera, fixes from the GPS)");
        return ExitCode::from(2);
    };
    let model = match load_model(model_dir.as_ref()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            return ExitCode::from(2);
        }
    };
    let shots = match capture_all() {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "{NAME}: {e}\n{NAME}: run it as `clonecloud run --camera DIR --gps TRACK.csv ...`, or natively with \
                 CLONECLOUD_CAMERA=DIR CLONECLOUD_GPS=TRACK.csv"
            );
            return ExitCode::from(2);
        }
    };
    let screen = |r: Result<(), device::Status>| {
        if let Err(e) = r {
            eprintln!("{NAME}: screen: {e}");
        }
    };
    let mut out = std::io::stdout().lock();
    let mut totals = Totals::default();
    for (i, shot) in shots.iter().enumerate() {
        let index = i + 1;
        let found = detect(&model.cascade, &model.params, &shot.frame);
        totals.add(&found);
        if writeln!(out, "{}", frame_line(index, shot, &found)).and_then(|_| out.flush()).is_err() {
            return ExitCode::from(1);
        }
        let shown = match &found {
            Ok(d) => format!("frame {index}: {}", faces_text(d.faces.len())),
            Err(_) => format!("frame {index}: undecodable"),
        };
        screen(device::screen_text(&shown));
        // `index <= len`, so the per mille is at most 1000.
        screen(device::screen_progress(u32::try_from(index * 1000 / shots.len()).unwrap_or(1000)));
    }
    if writeln!(out, "{}", totals.line()).and_then(|_| out.flush()).is_err() {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
