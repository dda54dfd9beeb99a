//! Pillow's `Image.resize` for 8-bit RGB with the BOX and BILINEAR filters, reproduced exactly:
//! the same coefficient windows, the same 22-bit fixed-point weights and rounding, and the same
//! horizontal-then-vertical passes with an 8-bit image in between. diffusers prepares the
//! conditioning image with Pillow, so any other resampler shifts the model's input.

/// Fractional bits of Pillow's fixed-point coefficients (32 − 8 − 2).
const PRECISION_BITS: u32 = 22;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Box,
    Bilinear,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bilinear => 1.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => (1.0 - x.abs()).max(0.0),
        }
    }
}

/// An 8-bit RGB image, rows top to bottom, 3 bytes a pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Rgb8 {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), width * height * 3, "RGB buffer size");
        Self {
            width,
            height,
            data,
        }
    }

    /// `Image.crop((x0, y0, x0 + w, y0 + h))`: areas outside the image are black, as in Pillow.
    pub fn crop(&self, x0: i64, y0: i64, w: usize, h: usize) -> Rgb8 {
        let mut data = vec![0u8; w * h * 3];
        for y in 0..h {
            let sy = y0 + y as i64;
            if sy < 0 || sy >= self.height as i64 {
                continue;
            }
            for x in 0..w {
                let sx = x0 + x as i64;
                if sx < 0 || sx >= self.width as i64 {
                    continue;
                }
                let src = (sy as usize * self.width + sx as usize) * 3;
                let dst = (y * w + x) * 3;
                data[dst..dst + 3].copy_from_slice(&self.data[src..src + 3]);
            }
        }
        Rgb8::new(w, h, data)
    }
}

/// For each output position: first input index and the fixed-point weights of its window.
struct Coefficients {
    windows: Vec<(usize, Vec<i32>)>,
}

fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let windows = (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let raw: Vec<f64> = (xmin..xmax)
                .map(|x| filter.weight((x as f64 - center + 0.5) / filterscale))
                .collect();
            let total: f64 = raw.iter().sum();
            let one = (1i64 << PRECISION_BITS) as f64;
            let fixed = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    if w < 0.0 {
                        (-0.5 + w * one) as i32
                    } else {
                        (0.5 + w * one) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect();
    Coefficients { windows }
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One pass along rows (`horizontal`) or columns, producing an 8-bit image.
fn pass(src: &Rgb8, coeffs: &Coefficients, horizontal: bool) -> Rgb8 {
    let (out_w, out_h) = if horizontal {
        (coeffs.windows.len(), src.height)
    } else {
        (src.width, coeffs.windows.len())
    };
    let mut data = vec![0u8; out_w * out_h * 3];
    for y in 0..out_h {
        for x in 0..out_w {
            let (start, weights) = &coeffs.windows[if horizontal { x } else { y }];
            let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
            for (i, &k) in weights.iter().enumerate() {
                let (sx, sy) = if horizontal {
                    (start + i, y)
                } else {
                    (x, start + i)
                };
                let p = (sy * src.width + sx) * 3;
                for (a, &v) in acc.iter_mut().zip(&src.data[p..p + 3]) {
                    *a += v as i32 * k;
                }
            }
            let d = (y * out_w + x) * 3;
            for (out, &a) in data[d..d + 3].iter_mut().zip(&acc) {
                *out = clip8(a);
            }
        }
    }
    Rgb8::new(out_w, out_h, data)
}

/// `Image.resize((width, height), filter)` for an RGB image.
pub fn resize(src: &Rgb8, width: usize, height: usize, filter: Filter) -> Rgb8 {
    let mut img = src.clone();
    if width != src.width {
        img = pass(&img, &coefficients(src.width, width, filter), true);
    }
    if height != src.height {
        img = pass(&img, &coefficients(src.height, height, filter), false);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_halving_averages_pairs() {
        let src = Rgb8::new(
            4,
            1,
            vec![0, 0, 0, 10, 10, 10, 100, 100, 100, 201, 201, 201],
        );
        let out = resize(&src, 2, 1, Filter::Box);
        // (0+10)/2 = 5, (100+201)/2 = 150.5 rounds up.
        assert_eq!(out.data, vec![5, 5, 5, 151, 151, 151]);
    }

    #[test]
    fn crop_outside_is_black() {
        let src = Rgb8::new(1, 1, vec![9, 9, 9]);
        let out = src.crop(-1, 0, 2, 1);
        assert_eq!(out.data, vec![0, 0, 0, 9, 9, 9]);
    }
}
