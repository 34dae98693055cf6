//! photo-tagger: CloneCloud's image search on a phone. It takes every frame from the device's
//! camera, each with the position fix taken right after it, finds the faces in each frame with
//! image-search's LBP face cascade, shows its progress on the device's screen, and prints a report
//! tagging each frame with its size, where and when it was taken, and its faces.
//!
//! The device calls (camera, position, screen) are `clonecloud-device-api`'s: wasm imports under
//! `clonecloud run --camera DIR --gps TRACK.csv`, files named by `CLONECLOUD_CAMERA` and
//! `CLONECLOUD_GPS` natively. The work is split so a partitioner can see it: [`capture_all`] calls
//! the camera and the position in a tight loop (it must stay on the device), [`detect`] is pure
//! compute over one frame's bytes (what may migrate to a clone).
//!
//! What it does not know: clonecloud itself (it is a plain program: migration is invisible to
//! it), or what a frame shows beyond faces. The report holds integers and fixed-point numbers
//! only, so it is the same bytes natively and on wasm32.

use clonecloud_device_api::{self as device, Fix};
use image_search::cascade::{Cascade, Params, Rect};
use image_search::image;
use std::path::Path;

/// A face found in a frame: its box, in pixels of the frame.
pub type Face = Rect;

/// The detector: the cascade and its settings, read from MODEL_DIR.
#[derive(Debug, Clone)]
pub struct Model {
    pub cascade: Cascade,
    pub params: Params,
}

/// Reads `dir/cascade.xml` (an OpenCV LBP face cascade) and `dir/settings.txt` (image-search's
/// detector settings). An error is the message to print.
pub fn load_model(dir: &Path) -> Result<Model, String> {
    let read = |name: &str, what: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| format!("cannot read {name} ({what}) in the model directory {}: {e}", dir.display()))
    };
    let cascade = Cascade::parse(&read("cascade.xml", "the LBP face cascade")?).map_err(|e| format!("cascade.xml: {e}"))?;
    let params = image_search::settings(&read("settings.txt", "the detector settings")?)?;
    Ok(Model { cascade, params })
}

/// A frame as the camera gave it (PNG or JPEG bytes), and the fix taken right after it.
#[derive(Debug, Clone)]
pub struct Shot {
    pub frame: Vec<u8>,
    pub fix: Fix,
}

/// Takes every frame from the camera into memory, each followed by a position fix: camera and
/// position calls in a tight loop, which keeps this function on the device. An error names the
/// device that failed.
#[inline(never)]
pub fn capture_all() -> Result<Vec<Shot>, String> {
    let mut shots = Vec::new();
    loop {
        let frame = match device::camera_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(shots),
            Err(e) => return Err(format!("camera (frame {}): {e}", shots.len() + 1)),
        };
        let fix = device::position().map_err(|e| format!("position (after frame {}): {e}", shots.len() + 1))?;
        shots.push(Shot { frame, fix });
    }
}

/// What [`detect`] found in a frame: its size and the faces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub width: usize,
    pub height: usize,
    pub faces: Vec<Face>,
}

/// Decodes a frame (PNG or JPEG) to gray and runs the multi-scale face detector over it. Pure
/// compute, no device call: the function a clone may run. An error says why the frame cannot be
/// decoded.
#[inline(never)]
pub fn detect(cascade: &Cascade, params: &Params, frame: &[u8]) -> Result<Detection, String> {
    let gray = image::decode(frame)?;
    let faces = cascade.detect(&image::Integral::new(&gray), params);
    Ok(Detection { width: gray.width, height: gray.height, faces })
}

/// `N face` or `N faces`.
pub fn faces_text(n: usize) -> String {
    format!("{n} face{}", if n == 1 { "" } else { "s" })
}

/// A frame's report line (without its newline), `index` counting from 1:
/// `frame I: WxH at LAT,LON t=UNIX_MS: N faces [x,y,w,h; ...]`, or for a frame that cannot be
/// decoded `frame I: B bytes at LAT,LON t=UNIX_MS: undecodable: REASON`.
pub fn frame_line(index: usize, shot: &Shot, found: &Result<Detection, String>) -> String {
    let at = format!("at {:.6},{:.6} t={}", shot.fix.latitude, shot.fix.longitude, shot.fix.unix_ms);
    match found {
        Ok(d) => {
            let boxes: Vec<String> = d.faces.iter().map(|f| format!("{},{},{},{}", f.x, f.y, f.width, f.height)).collect();
            format!("frame {index}: {}x{} {at}: {} [{}]", d.width, d.height, faces_text(d.faces.len()), boxes.join("; "))
        }
        // A decoder's message may span lines: the report keeps a frame to a line.
        Err(why) => format!("frame {index}: {} bytes {at}: undecodable: {}", shot.frame.len(), why.split_whitespace().collect::<Vec<_>>().join(" ")),
    }
}

/// The running totals the summary line prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub frames: usize,
    pub with_faces: usize,
    pub faces: usize,
    pub undecodable: usize,
}

impl Totals {
    pub fn add(&mut self, found: &Result<Detection, String>) {
        self.frames += 1;
        match found {
            Ok(d) => {
                self.with_faces += usize::from(!d.faces.is_empty());
                self.faces += d.faces.len();
            }
            Err(_) => self.undecodable += 1,
        }
    }

    /// The report's last line (without its newline).
    pub fn line(&self) -> String {
        format!("frames: {}, with faces: {}, faces: {}, undecodable: {}", self.frames, self.with_faces, self.faces, self.undecodable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shot(frame: &[u8]) -> Shot {
        Shot { frame: frame.to_vec(), fix: Fix { latitude: 37.4275, longitude: -122.16970049, unix_ms: 1_700_000_005_000 } }
    }

    #[test]
    fn lines_and_totals() {
        let faces = vec![Rect { x: 1, y: 2, width: 40, height: 41 }, Rect { x: 100, y: 20, width: 50, height: 50 }];
        let two = Ok(Detection { width: 640, height: 480, faces });
        assert_eq!(frame_line(1, &shot(b"png"), &two), "frame 1: 640x480 at 37.427500,-122.169700 t=1700000005000: 2 faces [1,2,40,41; 100,20,50,50]");
        let none = Ok(Detection { width: 64, height: 48, faces: vec![] });
        assert_eq!(frame_line(2, &shot(b"png"), &none), "frame 2: 64x48 at 37.427500,-122.169700 t=1700000005000: 0 faces []");
        let bad = detect(&dummy_cascade(), &params(), b"not an image");
        assert_eq!(frame_line(3, &shot(b"not an image"), &bad), "frame 3: 12 bytes at 37.427500,-122.169700 t=1700000005000: undecodable: neither a PNG nor a JPEG file");
        let mut t = Totals::default();
        for f in [&two, &none, &bad] {
            t.add(f);
        }
        let multi: Result<Detection, String> = Err("bad PNG: short\n\n".into());
        assert_eq!(frame_line(4, &shot(b""), &multi), "frame 4: 0 bytes at 37.427500,-122.169700 t=1700000005000: undecodable: bad PNG: short");
        assert_eq!(t.line(), "frames: 3, with faces: 1, faces: 2, undecodable: 1");
    }

    fn params() -> Params {
        image_search::settings("").unwrap()
    }

    fn dummy_cascade() -> Cascade {
        Cascade::parse(
            "<opencv_storage><cascade><featureType>LBP</featureType><width>24</width><height>24</height>\
             <stages><_><stageThreshold>0</stageThreshold><weakClassifiers><_><internalNodes>0 -1 0 0 0 0 0 0 0 0 0</internalNodes>\
             <leafValues>1 1</leafValues></_></weakClassifiers></_></stages>\
             <features><_><rect>0 0 1 1</rect></_></features></cascade></opencv_storage>",
        )
        .unwrap()
    }

    #[test]
    fn missing_model_is_a_clear_error() {
        let err = load_model(Path::new("/nonexistent/model")).unwrap_err();
        assert!(err.contains("cannot read cascade.xml") && err.contains("/nonexistent/model"), "{err}");
    }
}
