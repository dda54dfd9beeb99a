//! RGB -> YUV 4:2:0 (I420), BT.601 limited range ("TV range": Y 16..235, U/V 16..240).
//!
//! Odd widths and heights are padded to even by repeating the last column / row.

/// Planar I420 picture of even size.
pub(crate) struct I420 {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

/// The even size a `width` x `height` picture is padded to.
pub fn padded_size(width: usize, height: usize) -> (usize, usize) {
    (width + (width & 1), height + (height & 1))
}

// BT.601 limited range, 16-bit fixed point.
const YR: i32 = 16829;
const YG: i32 = 33039;
const YB: i32 = 6416;
const UR: i32 = -9714;
const UG: i32 = -19071;
const UB: i32 = 28784;
const VR: i32 = 28784;
const VG: i32 = -24103;
const VB: i32 = -4681;

impl I420 {
    pub fn new(width: usize, height: usize) -> Self {
        let (pw, ph) = padded_size(width, height);
        Self {
            width: pw,
            height: ph,
            y: vec![0; pw * ph],
            u: vec![0; pw * ph / 4],
            v: vec![0; pw * ph / 4],
        }
    }

    /// Fills the planes from `rgb` (`width` x `height`, the unpadded size given to `new`).
    pub fn fill(&mut self, rgb: &[u8], width: usize, height: usize) {
        let (pw, ph) = (self.width, self.height);
        let px = |x: usize, y: usize| {
            let i = (y.min(height - 1) * width + x.min(width - 1)) * 3;
            (rgb[i] as i32, rgb[i + 1] as i32, rgb[i + 2] as i32)
        };
        for y in 0..ph {
            let row = &mut self.y[y * pw..(y + 1) * pw];
            for (x, out) in row.iter_mut().enumerate() {
                let (r, g, b) = px(x, y);
                *out = ((YR * r + YG * g + YB * b + (16 << 16) + (1 << 15)) >> 16) as u8;
            }
        }
        let cw = pw / 2;
        for cy in 0..ph / 2 {
            for cx in 0..cw {
                let (mut r, mut g, mut b) = (0, 0, 0);
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let p = px(2 * cx + dx, 2 * cy + dy);
                    r += p.0;
                    g += p.1;
                    b += p.2;
                }
                let u = (UR * r + UG * g + UB * b + (128 << 18) + (1 << 17)) >> 18;
                let v = (VR * r + VG * g + VB * b + (128 << 18) + (1 << 17)) >> 18;
                self.u[cy * cw + cx] = u.clamp(0, 255) as u8;
                self.v[cy * cw + cx] = v.clamp(0, 255) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limited_range_extremes_and_padding() {
        // 3x1: black, white, red -> padded to 4x2.
        let rgb = [0, 0, 0, 255, 255, 255, 255, 0, 0];
        let mut p = I420::new(3, 1);
        p.fill(&rgb, 3, 1);
        assert_eq!((p.width, p.height), (4, 2));
        assert_eq!(p.y[0], 16);
        assert_eq!(p.y[1], 235);
        assert_eq!(p.y[2], 81); // red
        assert_eq!(p.y[3], 81); // repeated last column
        assert_eq!(&p.y[4..8], &p.y[0..4]); // repeated last row
        assert_eq!(p.v[1], 240); // red's Cr, averaged with itself
        assert_eq!(p.u[0], 128); // grey pair
    }
}
