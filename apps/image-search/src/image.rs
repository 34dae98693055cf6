//! Decoding PNG and JPEG files to 8-bit gray, and the integral image the detector reads.

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

#[derive(Debug, Clone)]
pub struct Gray {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// Luma from RGB with the ITU-R BT.709 weights scikit-image's `rgb2gray` uses, in integers.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((2125 * u32::from(r) + 7154 * u32::from(g) + 721 * u32::from(b) + 5000) / 10000) as u8
}

fn to_gray(width: usize, height: usize, space: ColorSpace, data: &[u8]) -> Result<Gray, String> {
    let n = space.num_components();
    if data.len() < width * height * n {
        return Err("the decoder returned fewer pixels than the image has".into());
    }
    let pixels = match space {
        ColorSpace::Luma | ColorSpace::LumaA => data.chunks_exact(n).map(|p| p[0]).collect(),
        ColorSpace::RGB | ColorSpace::RGBA => data.chunks_exact(n).map(|p| luma(p[0], p[1], p[2])).collect(),
        other => return Err(format!("unsupported colour space {other:?}")),
    };
    Ok(Gray { width, height, pixels })
}

/// Decodes a PNG or JPEG file (told apart by its signature).
pub fn decode(data: &[u8]) -> Result<Gray, String> {
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        let opts = DecoderOptions::default().png_set_strip_to_8bit(true).set_max_width(1 << 14).set_max_height(1 << 14);
        let mut d = zune_png::PngDecoder::new_with_options(ZCursor::new(data), opts);
        d.decode_headers().map_err(|e| format!("bad PNG: {e:?}"))?;
        let (w, h) = d.dimensions().ok_or("bad PNG: no dimensions")?;
        let space = d.colorspace().ok_or("bad PNG: no colour space")?;
        let raw = d.decode_raw().map_err(|e| format!("bad PNG: {e:?}"))?;
        to_gray(w, h, space, &raw)
    } else if data.starts_with(&[0xff, 0xd8]) {
        let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB).set_max_width(1 << 14).set_max_height(1 << 14);
        let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(data), opts);
        let raw = d.decode().map_err(|e| format!("bad JPEG: {e:?}"))?;
        let (w, h) = d.dimensions().ok_or("bad JPEG: no dimensions")?;
        let space = d.output_colorspace().ok_or("bad JPEG: no colour space")?;
        to_gray(w, h, space, &raw)
    } else {
        Err("neither a PNG nor a JPEG file".into())
    }
}

/// Sums of the pixels above and left of each point, with a zero first row and column. Sums are
/// kept modulo 2^32: a rectangle's sum, a difference of four of them, is exact while the
/// rectangle's own sum fits, whatever the image's size.
#[derive(Debug, Clone)]
pub struct Integral {
    pub width: usize,
    pub height: usize,
    pub stride: usize,
    pub sums: Vec<u32>,
}

impl Integral {
    pub fn new(g: &Gray) -> Integral {
        let stride = g.width + 1;
        let mut sums = vec![0u32; stride * (g.height + 1)];
        for y in 0..g.height {
            let mut row = 0u32;
            for x in 0..g.width {
                row = row.wrapping_add(u32::from(g.pixels[y * g.width + x]));
                sums[(y + 1) * stride + x + 1] = sums[y * stride + x + 1].wrapping_add(row);
            }
        }
        Integral { width: g.width, height: g.height, stride, sums }
    }
}
