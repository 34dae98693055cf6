//! photo-tagger inputs: the model (image-search's face cascade and detector settings), the
//! camera's frames (image-search's images at the same size: the same photos and variants, in the
//! same order, named `frame-NNNN.png` or `.jpg` in capture order) and a GPS track with one fix a
//! frame: a walk drawn from the seed, starting near Stanford (37.4275, -122.1697), a fix every 5 s
//! from 1700000000000 ms.
//!
//! The track is drawn in whole micro-degrees and written with fixed decimals, so its text is the
//! same on every machine.

use crate::faces;
use crate::rng::Rng;
use crate::{Size, write_file};
use std::path::Path;

/// Where the walk starts, in micro-degrees.
const START: (i64, i64) = (37_427_500, -122_169_700);
/// The first fix's time, and the time between fixes (ms).
const T0: i64 = 1_700_000_000_000;
const EVERY_MS: i64 = 5_000;

/// Micro-degrees as degrees with six decimals (`-122.169700`).
fn degrees(micro: i64) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    format!("{sign}{}.{:06}", micro.unsigned_abs() / 1_000_000, micro.unsigned_abs() % 1_000_000)
}

pub fn generate(size: Size, seed: u64, out: &Path, third_party: &Path) -> Result<serde_json::Value, String> {
    let cascade = faces::read_cascade(third_party)?;
    write_file(&out.join("model").join("cascade.xml"), &cascade)?;
    write_file(&out.join("model").join("settings.txt"), faces::SETTINGS.as_bytes())?;

    let mut walk = Rng::new(seed).fork("photo-tagger").fork(size.name()).fork("track");
    // Start within ~100 m of the point.
    let (mut lat, mut lon) = (START.0 + walk.range(0, 2000) as i64 - 1000, START.1 + walk.range(0, 2000) as i64 - 1000);
    // A walk at about 1.4 m/s: ~7 m between fixes, keeping a heading that drifts. A micro-degree
    // is ~0.11 m of latitude and ~0.09 m of longitude here.
    let (mut dlat, mut dlon) = (walk.range(0, 120) as i64 - 60, walk.range(0, 160) as i64 - 80);

    let mut track = String::from("unix_ms,latitude,longitude\n");
    let mut truth = Vec::new();
    let mut with_faces = 0;
    faces::variants(size, seed, third_party, |i, v| {
        let file = format!("frame-{:04}.{}", i + 1, v.ext());
        write_file(&out.join("camera").join(&file), &v.bytes)?;
        let t = T0 + EVERY_MS * i as i64;
        track.push_str(&format!("{t},{},{}\n", degrees(lat), degrees(lon)));
        with_faces += usize::from(!v.faces.is_empty());
        truth.push(serde_json::json!({
            "file": format!("camera/{file}"),
            "source": v.source,
            "faces": v.faces,
            "fix": { "unix_ms": t, "latitude": degrees(lat), "longitude": degrees(lon) },
        }));
        dlat = (dlat + walk.range(0, 30) as i64 - 15).clamp(-60, 60);
        dlon = (dlon + walk.range(0, 40) as i64 - 20).clamp(-80, 80);
        (lat, lon) = (lat + dlat, lon + dlon);
        Ok(())
    })?;
    write_file(&out.join("track.csv"), track.as_bytes())?;
    Ok(serde_json::json!({ "frames": faces::count(size), "with_faces": with_faces, "truth": truth }))
}

#[cfg(test)]
mod tests {
    use super::degrees;

    #[test]
    fn degrees_have_six_fixed_decimals() {
        assert_eq!(degrees(37_427_500), "37.427500");
        assert_eq!(degrees(-122_169_700), "-122.169700");
        assert_eq!(degrees(-5), "-0.000005");
        assert_eq!(degrees(0), "0.000000");
    }
}
