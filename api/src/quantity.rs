//! Resource quantities as Kubernetes writes them: `500m`, `4Gi`, `2`, `1e3`, `0.5`.
//!
//! A [`Quantity`] holds an exact value in nano-units (the finest precision Kubernetes keeps) and
//! the notation it was written in (decimal SI, binary SI or decimal exponent). It always prints in
//! the canonical form Kubernetes prints: the largest suffix of its notation that keeps the number
//! whole (`1500m`, `1536Mi`, `2k`). Equality and ordering compare values only, so `1Gi == 1024Mi`
//! and `1 == 1000m`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Add, AddAssign, Sub, SubAssign};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// CPU, in cores (`500m` is half a core).
pub const CPU: &str = "cpu";
/// Memory, in bytes.
pub const MEMORY: &str = "memory";
/// Local ephemeral storage, in bytes.
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
/// Whole NVIDIA GPUs (an extended resource).
pub const NVIDIA_GPU: &str = "nvidia.com/gpu";
/// The number of pods a node accepts.
pub const PODS: &str = "pods";

/// Amounts of resources by name (`cpu`, `memory`, `nvidia.com/gpu`, ...).
pub type ResourceList = BTreeMap<String, Quantity>;

const NANO: i128 = 1_000_000_000;
/// The largest magnitude accepted, in nano-units: `i64::MAX` whole units.
const MAX_NANOS: i128 = i64::MAX as i128 * NANO;
const EXPECTED: &str = "expected a number with an optional suffix (n, u, m, k, M, G, T, P, E, \
                        Ki, Mi, Gi, Ti, Pi, Ei) or exponent (e3), such as 500m, 4Gi or 2";

/// Whether `name` is an extended resource: a name with a domain prefix outside `kubernetes.io`
/// (`nvidia.com/gpu`). Extended resources are counted in whole units and never overcommitted.
pub fn is_extended_resource(name: &str) -> bool {
    match name.split_once('/') {
        Some((domain, _)) => {
            domain != "kubernetes.io"
                && !domain.ends_with(".kubernetes.io")
                && !name.starts_with("requests.")
        }
        None => false,
    }
}

/// Adds every quantity of `add` into `total`.
pub fn add_resources(total: &mut ResourceList, add: &ResourceList) {
    for (name, q) in add {
        *total.entry(name.clone()).or_default() += *q;
    }
}

/// Raises every quantity of `total` to at least the one in `other`.
pub fn max_resources(total: &mut ResourceList, other: &ResourceList) {
    for (name, q) in other {
        let entry = total.entry(name.clone()).or_default();
        if *q > *entry {
            *entry = *q;
        }
    }
}

/// How a quantity is written; it decides the suffixes used when printing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// Powers of 1000: `m`, `k`, `M`, `G`, ...
    #[default]
    DecimalSI,
    /// Powers of 1024: `Ki`, `Mi`, `Gi`, ...
    BinarySI,
    /// `1e3`, `5e-3`.
    DecimalExponent,
}

/// Why a quantity string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("empty quantity: {EXPECTED}")]
    Empty,
    #[error("invalid quantity {input:?}: {reason}; {EXPECTED}")]
    Invalid { input: String, reason: String },
    #[error("quantity {input:?} is too large: at most 9223372036854775807 whole units")]
    TooLarge { input: String },
}

/// An exact amount of a resource.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

impl Quantity {
    /// Parses a Kubernetes quantity string.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        if s.is_empty() {
            return Err(QuantityError::Empty);
        }
        let invalid = |reason: &str| QuantityError::Invalid {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let too_large = || QuantityError::TooLarge {
            input: s.to_string(),
        };
        let (negative, body) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (number, suffix) = body.split_at(num_end);
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid("no digits"));
        }
        if frac_part.contains('.') {
            return Err(invalid("more than one decimal point"));
        }
        // Trailing zeros after the point change nothing but the length of the mantissa.
        let frac_part = frac_part.trim_end_matches('0');
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 36 {
            return Err(too_large());
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| invalid("bad digits"))?
        };
        let frac_len = frac_part.len() as i32;

        // The value is mantissa * 10^(exp10 - frac_len) * 1024^pow1024.
        let (format, exp10, pow1024) = match suffix {
            "" => (Format::DecimalSI, 0, 0),
            "n" => (Format::DecimalSI, -9, 0),
            "u" => (Format::DecimalSI, -6, 0),
            "m" => (Format::DecimalSI, -3, 0),
            "k" => (Format::DecimalSI, 3, 0),
            "M" => (Format::DecimalSI, 6, 0),
            "G" => (Format::DecimalSI, 9, 0),
            "T" => (Format::DecimalSI, 12, 0),
            "P" => (Format::DecimalSI, 15, 0),
            "E" => (Format::DecimalSI, 18, 0),
            "Ki" => (Format::BinarySI, 0, 1),
            "Mi" => (Format::BinarySI, 0, 2),
            "Gi" => (Format::BinarySI, 0, 3),
            "Ti" => (Format::BinarySI, 0, 4),
            "Pi" => (Format::BinarySI, 0, 5),
            "Ei" => (Format::BinarySI, 0, 6),
            _ if suffix.len() > 1 && (suffix.starts_with('e') || suffix.starts_with('E')) => {
                let exp = &suffix[1..];
                let unsigned = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid("the exponent must be a whole number"));
                }
                let e: i32 = exp.parse().map_err(|_| too_large())?;
                if e > 40 {
                    return Err(too_large());
                }
                (Format::DecimalExponent, e.max(-40), 0)
            }
            _ => return Err(invalid(&format!("unknown suffix {suffix:?}"))),
        };
        let mut value = mantissa
            .checked_mul(1024i128.pow(pow1024))
            .ok_or_else(too_large)?;
        let shift = exp10 + 9 - frac_len;
        if shift >= 0 {
            let factor = 10i128.checked_pow(shift as u32).ok_or_else(too_large)?;
            value = value.checked_mul(factor).ok_or_else(too_large)?;
        } else {
            // Finer than a nano-unit: round up, as Kubernetes does.
            let divisor = 10i128.checked_pow((-shift) as u32).unwrap_or(i128::MAX);
            value = div_ceil(value, divisor);
        }
        if value > MAX_NANOS {
            return Err(too_large());
        }
        Ok(Quantity {
            nanos: if negative { -value } else { value },
            format,
        })
    }

    /// A quantity of `milli` thousandths (`500` → `500m`).
    pub fn from_milli(milli: i64) -> Quantity {
        Quantity {
            nanos: milli as i128 * 1_000_000,
            format: Format::DecimalSI,
        }
    }

    /// A quantity of whole units, printed with decimal suffixes (`2`, `3k`).
    pub fn from_value(value: i64) -> Quantity {
        Quantity {
            nanos: value as i128 * NANO,
            format: Format::DecimalSI,
        }
    }

    /// A number of bytes, printed with binary suffixes (`4Gi`).
    pub fn from_bytes_binary(bytes: i64) -> Quantity {
        Quantity {
            nanos: bytes as i128 * NANO,
            format: Format::BinarySI,
        }
    }

    pub fn zero() -> Quantity {
        Quantity::default()
    }

    /// The value in thousandths, rounded up (Kubernetes' `MilliValue`); saturates at the bounds
    /// of `i64`.
    pub fn milli(&self) -> i64 {
        saturate(div_ceil(self.nanos, 1_000_000))
    }

    /// The value in whole units, rounded up (Kubernetes' `Value`).
    pub fn value(&self) -> i64 {
        saturate(div_ceil(self.nanos, NANO))
    }

    /// The value as a float, for scoring and display.
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / NANO as f64
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// Whether the value is a whole number of units (as extended resources must be).
    pub fn is_whole(&self) -> bool {
        self.nanos % NANO == 0
    }

    /// The sum, or `None` past the largest quantity.
    pub fn checked_add(self, other: Quantity) -> Option<Quantity> {
        let nanos = self.nanos.checked_add(other.nanos)?;
        (nanos.abs() <= MAX_NANOS).then_some(Quantity {
            nanos,
            format: self.result_format(other),
        })
    }

    /// The difference, or `None` past the largest quantity.
    pub fn checked_sub(self, other: Quantity) -> Option<Quantity> {
        self.checked_add(Quantity {
            nanos: -other.nanos,
            format: other.format,
        })
    }

    fn result_format(self, other: Quantity) -> Format {
        if self.nanos == 0 {
            other.format
        } else {
            self.format
        }
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 { q + 1 } else { q }
}

fn saturate(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

const DECIMAL_SUFFIXES: [(i32, &str); 10] = [
    (18, "E"),
    (15, "P"),
    (12, "T"),
    (9, "G"),
    (6, "M"),
    (3, "k"),
    (0, ""),
    (-3, "m"),
    (-6, "u"),
    (-9, "n"),
];
const BINARY_SUFFIXES: [(u32, &str); 6] = [
    (6, "Ei"),
    (5, "Pi"),
    (4, "Ti"),
    (3, "Gi"),
    (2, "Mi"),
    (1, "Ki"),
];

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.abs();
        if self.format == Format::BinarySI && abs % NANO == 0 && abs / NANO >= 1024 {
            let units = abs / NANO;
            for (pow, suffix) in BINARY_SUFFIXES {
                let unit = 1024i128.pow(pow);
                if units % unit == 0 {
                    return write!(f, "{sign}{}{suffix}", units / unit);
                }
            }
            return write!(f, "{sign}{units}");
        }
        for (exp, suffix) in DECIMAL_SUFFIXES {
            let unit = 10i128.pow((exp + 9) as u32);
            if abs % unit == 0 {
                let m = abs / unit;
                return match self.format {
                    Format::DecimalExponent if exp != 0 => write!(f, "{sign}{m}e{exp}"),
                    Format::DecimalExponent => write!(f, "{sign}{m}"),
                    _ => write!(f, "{sign}{m}{suffix}"),
                };
            }
        }
        // Unreachable: every value is a whole number of nano-units.
        write!(f, "{sign}{abs}n")
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.nanos.hash(state);
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

/// Saturates at the largest quantity rather than wrapping.
impl Add for Quantity {
    type Output = Quantity;
    fn add(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: (self.nanos + other.nanos).clamp(-MAX_NANOS, MAX_NANOS),
            format: self.result_format(other),
        }
    }
}

impl Sub for Quantity {
    type Output = Quantity;
    fn sub(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: (self.nanos - other.nanos).clamp(-MAX_NANOS, MAX_NANOS),
            format: self.result_format(other),
        }
    }
}

impl AddAssign for Quantity {
    fn add_assign(&mut self, other: Quantity) {
        *self = *self + other;
    }
}

impl SubAssign for Quantity {
    fn sub_assign(&mut self, other: Quantity) {
        *self = *self - other;
    }
}

impl std::iter::Sum for Quantity {
    fn sum<I: Iterator<Item = Quantity>>(iter: I) -> Quantity {
        iter.fold(Quantity::zero(), |a, b| a + b)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(QuantityVisitor)
    }
}

struct QuantityVisitor;

impl Visitor<'_> for QuantityVisitor {
    type Value = Quantity;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quantity such as 500m, 4Gi or 2")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
        Quantity::parse(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
        Ok(Quantity::from_value(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
        i64::try_from(v).map(Quantity::from_value).map_err(|_| {
            E::custom(QuantityError::TooLarge {
                input: v.to_string(),
            })
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
        // `Display` of an f64 never uses exponent notation, so it parses as a plain number.
        Quantity::parse(&v.to_string()).map_err(E::custom)
    }
}
