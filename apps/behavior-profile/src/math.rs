//! `ln` and `exp` from additions, multiplications and divisions only.
//!
//! The standard library's `ln`/`exp` call the platform's libm (glibc natively, a musl port on
//! wasm32-wasip1), which may differ in the last bit; these give the same bits everywhere, so the
//! report is byte-identical wherever the program runs. Both are accurate to a few ulps.

// ln 2 split in two (fdlibm's constants): k * LN2_HI is exact for the k used here.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
const LN2: f64 = std::f64::consts::LN_2;
const LOG2E: f64 = std::f64::consts::LOG2_E;

/// 2^k for `-1022 <= k <= 1023`.
fn pow2(k: i64) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// e^x.
pub fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.7 {
        return f64::INFINITY;
    }
    if x < -745.2 {
        return 0.0;
    }
    // x = k ln 2 + r with |r| <= ln2 / 2, then e^r by its Taylor series (Horner).
    let k = (x * LOG2E + 0.5).floor();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0;
    for n in (1..=14).rev() {
        p = 1.0 + p * r / f64::from(n);
    }
    let k = k as i64;
    // Split the scaling so subnormal results and k = 1024 stay exact.
    if k < -1000 {
        p * pow2(k + 1000) * pow2(-1000)
    } else if k > 1000 {
        p * pow2(k - 1000) * pow2(1000)
    } else {
        p * pow2(k)
    }
}

/// The natural logarithm of `x > 0` (NaN for negative `x`, -inf for 0).
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x.is_infinite() {
        return x;
    }
    // x = m 2^e with m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(s), s = (m - 1) / (m + 1).
    let (mut x, mut e) = (x, 0i64);
    if x < f64::MIN_POSITIVE {
        x *= pow2(54);
        e -= 54;
    }
    let bits = x.to_bits();
    e += ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    // |s| <= 0.1716: the series to s^29 leaves an error below 1e-22.
    let mut sum = 0.0;
    for n in (0..15).rev() {
        sum = 1.0 / f64::from(2 * n + 1) + s2 * sum;
    }
    e as f64 * LN2 + 2.0 * s * sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_to_the_platform_functions() {
        let mut x = -700.0;
        while x < 700.0 {
            let (got, want) = (exp(x), x.exp());
            assert!(((got - want) / want).abs() < 1e-14, "exp({x}) = {got}, libm {want}");
            x += 0.37;
        }
        let mut x = 1e-300;
        while x < 1e300 {
            let (got, want) = (ln(x), x.ln());
            assert!((got - want).abs() <= 1e-14 * want.abs().max(1.0), "ln({x}) = {got}, libm {want}");
            x *= 1.7;
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(exp(-1000.0), 0.0);
        assert!((ln(2.0) - LN2).abs() < 1e-16);
    }
}
