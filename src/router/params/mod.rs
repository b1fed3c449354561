//! Bound parameter values as a Bind message carries them, for routing by `$n`.
//!
//! Planning reads values only through `key`, `key_array`, `constant` and `binary_undeclared`,
//! and `recording` notes which ones it read: a plan that read nothing, or only one key, can be
//! reused for the next values (see `executor::extended::route_cache`).

use crate::placement::{KeyType, KeyValue};
use crate::protocol::message::Cursor;
use bytes::Bytes;
use std::cell::RefCell;

/// A parameter value that planning read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// `$n` (1-based) as one key of this type.
    Key(usize, KeyType),
    /// Read some other way (an array of keys, a LIMIT constant ...).
    Other,
}

thread_local! {
    // Planning is synchronous, so what it reads is what this thread reads meanwhile.
    static READS: RefCell<Option<Vec<Read>>> = const { RefCell::new(None) };
}

/// Runs `f` (a planning) and returns what it returned with the parameter values it read.
pub fn recording<T>(f: impl FnOnce() -> T) -> (T, Vec<Read>) {
    /// Stops the recording even when `f` unwinds.
    struct Stop;
    impl Drop for Stop {
        fn drop(&mut self) {
            READS.with(|r| r.borrow_mut().take());
        }
    }
    READS.with(|r| *r.borrow_mut() = Some(Vec::new()));
    let stop = Stop;
    let out = f();
    let reads = READS.with(|r| r.borrow_mut().take()).unwrap_or_default();
    drop(stop);
    (out, reads)
}

fn note(read: Read) {
    READS.with(|r| {
        if let Some(reads) = r.borrow_mut().as_mut() {
            reads.push(read);
        }
    });
}

/// A Bind's parameters, defined with the message so that planning reads a decoded Bind's
/// values where they are.
pub use crate::protocol::message::Params;

impl Params {
    /// The parameters at `picks` (0-based), in that order, with their formats.
    pub fn pick(&self, picks: &[usize]) -> Params {
        note(Read::Other);
        Params {
            values: picks
                .iter()
                .map(|&i| self.values.get(i).cloned().flatten())
                .collect(),
            formats: match self.formats.len() {
                0 | 1 => self.formats.clone(),
                _ => picks.iter().map(|&i| self.format_of(i)).collect(),
            },
            types: picks.iter().map(|&i| self.declared(i)).collect(),
        }
    }

    /// The type the statement declared for the parameter at `i` (0-based); 0 when left to the
    /// server.
    fn declared(&self, i: usize) -> u32 {
        self.types.get(i).copied().unwrap_or(0)
    }

    /// Whether `$n` (1-based) is declared of a type that the key of type `ty` compares as
    /// itself, so that its value is a key: left to the server (which then infers the key
    /// column's type), an integer type for an integer key, text or varchar for a text key, uuid
    /// for a uuid key, or text for either. A float or numeric compared with an integer key,
    /// say, is not: its bytes are no integer's, and `5.5` matches no row while `5.0` matches 5.
    pub fn typed_as_key(&self, n: usize, ty: KeyType) -> bool {
        let declared = n.checked_sub(1).map_or(0, |i| self.declared(i));
        declared == 0 || oid::UNKNOWN == declared || key_types(ty).contains(&declared)
    }

    /// As `typed_as_key`, for `$n` holding an array of keys (`= ANY($n)`).
    pub fn typed_as_key_array(&self, n: usize, ty: KeyType) -> bool {
        let declared = n.checked_sub(1).map_or(0, |i| self.declared(i));
        declared == 0 || key_array_types(ty).contains(&declared)
    }

    /// The format code of the value at index `i` (0-based): 0 text, 1 binary.
    pub fn format_of(&self, i: usize) -> i16 {
        match self.formats.len() {
            0 => 0,
            1 => self.formats[0],
            _ => self.formats.get(i).copied().unwrap_or(0),
        }
    }

    /// `$n` (1-based) as a key value. `Ok(None)` means SQL NULL (matches no row).
    pub fn key(&self, n: usize, ty: KeyType) -> Result<Option<KeyValue>, String> {
        note(Read::Key(n, ty));
        let i = n.checked_sub(1).ok_or("parameter $0")?;
        let Some(slot) = self.values.get(i) else {
            return Err(format!("there is no parameter ${n}"));
        };
        let Some(bytes) = slot else { return Ok(None) };
        // A value declared text is its characters in either format (`$1::bigint` of a text
        // parameter), never an integer's bytes.
        let declared_text = matches!(self.declared(i), oid::TEXT | oid::VARCHAR);
        if self.format_of(i) == 1 && !declared_text {
            KeyValue::from_binary(ty, bytes).map(Some)
        } else if let Some(v) = (ty == KeyType::Integer)
            .then(|| plain_integer(bytes))
            .flatten()
        {
            Ok(Some(KeyValue::Integer(v)))
        } else {
            let s = std::str::from_utf8(bytes).map_err(|_| "parameter is not UTF-8".to_string())?;
            KeyValue::from_text(ty, s).map(Some)
        }
    }

    /// `$n` (1-based) compared with the key's text (`id::text = $n`): the server reads it as
    /// text in either format, and a text that no key is written as matches no row (None, as
    /// NULL). Noted as a read other than a key's, since `key` would read a binary value
    /// otherwise, so no route is learned from it.
    pub fn key_from_text(&self, n: usize, ty: KeyType) -> Result<Option<KeyValue>, String> {
        if n.checked_sub(1).is_none_or(|i| i >= self.values.len()) {
            return Err(format!("there is no parameter ${n}"));
        }
        Ok(self.key_cast_from_text(n, ty).ok().flatten())
    }

    /// `$n` (1-based) as a key where the statement casts it from text (`$1::text::bigint`):
    /// left to the server, or declared text, its type is text, so a binary value is its
    /// characters; declared as another type, it is that type's value. Noted as a read other
    /// than a key's, as in `key_from_text`.
    pub fn key_cast_from_text(&self, n: usize, ty: KeyType) -> Result<Option<KeyValue>, String> {
        note(Read::Other);
        let i = n.checked_sub(1).ok_or("parameter $0")?;
        let Some(slot) = self.values.get(i) else {
            return Err(format!("there is no parameter ${n}"));
        };
        let Some(bytes) = slot else { return Ok(None) };
        if self.format_of(i) == 1 && !matches!(self.declared(i), 0 | oid::TEXT | oid::VARCHAR) {
            return KeyValue::from_binary(ty, bytes).map(Some);
        }
        let s = std::str::from_utf8(bytes).map_err(|_| "parameter is not UTF-8".to_string())?;
        KeyValue::from_text(ty, s).map(Some)
    }

    /// `$n` (1-based) as written text: a text-format value as sent, a binary one declared
    /// text as its characters, a binary float, numeric, date, timestamp or boolean declared so
    /// in the text that reads back as the same value (a timestamptz in UTC), a binary integer
    /// (int2/int4/int8, or left to the server, which infers one where a count is wanted) in
    /// decimal. None for NULL, a missing parameter, or another binary value: a float8's bytes
    /// are no integer's.
    pub fn constant(&self, n: usize) -> Option<String> {
        note(Read::Other);
        let i = n.checked_sub(1)?;
        let bytes = self.values.get(i)?.as_ref()?;
        if self.format_of(i) != 1 {
            return std::str::from_utf8(bytes)
                .ok()
                .map(|s| s.trim().to_string());
        }
        match self.declared(i) {
            // A text value's binary form is its characters.
            oid::TEXT | oid::VARCHAR => return std::str::from_utf8(bytes).ok().map(str::to_string),
            oid::FLOAT8 => return Some(float_text(f64::from_be_bytes(bytes[..].try_into().ok()?))),
            oid::FLOAT4 => {
                let v = f32::from_be_bytes(bytes[..].try_into().ok()?);
                // The shortest text that reads back as this float4 (not as its float8 widening).
                return Some(match v.is_finite() {
                    true => v.to_string(),
                    false => float_text(v as f64),
                });
            }
            oid::BOOL => {
                return match &bytes[..] {
                    [0] => Some("f".into()),
                    [1] => Some("t".into()),
                    _ => None,
                }
            }
            oid::NUMERIC => return numeric_text(bytes),
            oid::DATE => {
                let days = i32::from_be_bytes(bytes[..].try_into().ok()?);
                return Some(crate::sql::calendar::date_text(days));
            }
            oid::TIMESTAMP | oid::TIMESTAMPTZ => {
                let micros = i64::from_be_bytes(bytes[..].try_into().ok()?);
                let with_zone = self.declared(i) == oid::TIMESTAMPTZ;
                return Some(crate::sql::calendar::timestamp_text(micros, with_zone));
            }
            0 | oid::INT2 | oid::INT4 | oid::INT8 => {}
            _ => return None,
        }
        let v = match bytes.len() {
            2 => i16::from_be_bytes([bytes[0], bytes[1]]) as i64,
            4 => i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as i64,
            8 => i64::from_be_bytes(bytes[..8].try_into().ok()?),
            _ => return None,
        };
        Some(v.to_string())
    }

    /// Whether `$n` (1-based) is bound in binary without a declared type: its bytes are read
    /// as whatever type the server inferred for it, which another statement could infer
    /// otherwise.
    pub fn binary_undeclared(&self, n: usize) -> bool {
        note(Read::Other);
        n.checked_sub(1)
            .is_some_and(|i| self.format_of(i) == 1 && self.declared(i) == 0)
    }

    /// `$n` (1-based) read as text whatever its format: a text parameter's binary form is its
    /// bytes, so this holds for parameters whose type is text. None for NULL, a missing
    /// parameter, or bytes that are not UTF-8.
    pub fn text(&self, n: usize) -> Option<String> {
        note(Read::Other);
        let bytes = self.values.get(n.checked_sub(1)?)?.as_ref()?;
        std::str::from_utf8(bytes).ok().map(str::to_string)
    }

    /// `$n` as an array of keys (for `= ANY($n)`), in text (`{1,2}`) or binary array format.
    /// None when its elements are not keys (a binary array of another element type, or an
    /// array type declared otherwise, see `typed_as_key_array`).
    pub fn key_array(&self, n: usize, ty: KeyType) -> Result<Option<Vec<KeyValue>>, String> {
        note(Read::Other);
        if !self.typed_as_key_array(n, ty) {
            return Ok(None);
        }
        let i = n.checked_sub(1).ok_or("parameter $0")?;
        let Some(Some(bytes)) = self.values.get(i) else {
            return Ok(Some(vec![]));
        };
        if self.format_of(i) == 1 {
            binary_array(bytes, ty)
        } else {
            let s = std::str::from_utf8(bytes).map_err(|_| "parameter is not UTF-8".to_string())?;
            text_array(s, ty).map(Some)
        }
    }
}

/// Type OIDs of the values a key of each type is read from, and of HAVING's constants.
mod oid {
    pub const UNKNOWN: u32 = 705;
    pub const NUMERIC: u32 = 1700;
    pub const DATE: u32 = 1082;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const BOOL: u32 = 16;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const INT8: u32 = 20;
    pub const TEXT: u32 = 25;
    pub const VARCHAR: u32 = 1043;
    pub const UUID: u32 = 2950;
    pub const INT2_ARRAY: u32 = 1005;
    pub const INT4_ARRAY: u32 = 1007;
    pub const INT8_ARRAY: u32 = 1016;
    pub const TEXT_ARRAY: u32 = 1009;
    pub const VARCHAR_ARRAY: u32 = 1015;
    pub const UUID_ARRAY: u32 = 2951;
}

/// The types whose values are keys of type `ty` (text stands for any key: PostgreSQL reads
/// it as the column's type).
fn key_types(ty: KeyType) -> &'static [u32] {
    match ty {
        KeyType::Integer => &[oid::INT2, oid::INT4, oid::INT8, oid::TEXT, oid::VARCHAR],
        KeyType::Text => &[oid::TEXT, oid::VARCHAR],
        KeyType::Uuid => &[oid::UUID, oid::TEXT, oid::VARCHAR],
    }
}

/// The element types of a binary array whose elements are keys of type `ty`.
fn key_element_types(ty: KeyType) -> &'static [u32] {
    match ty {
        KeyType::Integer => &[oid::INT2, oid::INT4, oid::INT8],
        KeyType::Text => &[oid::TEXT, oid::VARCHAR],
        KeyType::Uuid => &[oid::UUID],
    }
}

/// The array types whose elements are keys of type `ty`.
fn key_array_types(ty: KeyType) -> &'static [u32] {
    match ty {
        KeyType::Integer => &[
            oid::INT2_ARRAY,
            oid::INT4_ARRAY,
            oid::INT8_ARRAY,
            oid::TEXT_ARRAY,
        ],
        KeyType::Text => &[oid::TEXT_ARRAY, oid::VARCHAR_ARRAY],
        KeyType::Uuid => &[oid::UUID_ARRAY, oid::TEXT_ARRAY],
    }
}

fn text_array(s: &str, ty: KeyType) -> Result<Vec<KeyValue>, String> {
    let inner = s
        .trim()
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| format!("{s:?} is not an array literal"))?;
    text_array_elements(inner)?
        .into_iter()
        .flatten()
        .map(|e| KeyValue::from_text(ty, &e))
        .collect()
}

/// The elements of a one-dimensional array literal's inside, as `array_in` reads them:
/// unquoted (trimmed; `NULL` is None) or double-quoted with backslash escapes (as node-postgres
/// sends every element).
fn text_array_elements(inner: &str) -> Result<Vec<Option<String>>, String> {
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            if !out.is_empty() {
                return Err("an array literal ends with a comma".into());
            }
            return Ok(out);
        }
        if chars.next_if_eq(&'"').is_some() {
            let mut e = String::new();
            loop {
                match chars.next() {
                    None => return Err("an array element's quotes are not closed".into()),
                    Some('"') => break,
                    Some('\\') => {
                        e.push(chars.next().ok_or("an array element ends in a backslash")?)
                    }
                    Some(c) => e.push(c),
                }
            }
            out.push(Some(e));
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
        } else {
            let mut e = String::new();
            while let Some(c) = chars.next_if(|c| *c != ',') {
                if matches!(c, '{' | '}' | '"' | '\\') {
                    return Err(
                        "nested or escaped array elements are not supported for routing".into(),
                    );
                }
                e.push(c);
            }
            let e = e.trim();
            out.push((!e.eq_ignore_ascii_case("null")).then(|| e.to_string()));
        }
        match chars.next() {
            None => return Ok(out),
            Some(',') => {}
            Some(c) => return Err(format!("unexpected {c:?} in an array literal")),
        }
    }
}

/// A one-dimensional binary array (`array_send` layout). The declared element count is checked
/// against the bytes present (each element takes at least its 4-byte length) before anything is
/// sized from it.
fn binary_array(b: &Bytes, ty: KeyType) -> Result<Option<Vec<KeyValue>>, String> {
    let mut c = Cursor::new(b, "array parameter");
    let ndim = c.i32().map_err(|e| e.to_string())?;
    let _has_nulls = c.i32().map_err(|e| e.to_string())?;
    let elem_type = c.u32().map_err(|e| e.to_string())?;
    if !key_element_types(ty).contains(&elem_type) {
        return Ok(None);
    }
    match ndim {
        0 => return Ok(Some(vec![])),
        1 => {}
        n if n < 0 => return Err(format!("invalid number of array dimensions {n}")),
        _ => return Err("only one-dimensional arrays route".into()),
    }
    let len = c.i32().map_err(|e| e.to_string())?;
    let _lower_bound = c.i32().map_err(|e| e.to_string())?;
    let len = usize::try_from(len).map_err(|_| format!("invalid array length {len}"))?;
    if len.saturating_mul(4) > c.remaining() {
        return Err("array parameter claims more elements than it holds".into());
    }
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        let n = c.i32().map_err(|e| e.to_string())?;
        if n < 0 {
            continue;
        }
        let elem = c.bytes(n as usize).map_err(|e| e.to_string())?;
        out.push(KeyValue::from_binary(ty, &elem)?);
    }
    c.finish().map_err(|e| e.to_string())?;
    Ok(Some(out))
}

/// A float8 as PostgreSQL reads it back exactly: the shortest digits that round-trip (Rust
/// writes no exponent), and PostgreSQL's names for the special values.
fn float_text(v: f64) -> String {
    match v {
        v if v.is_nan() => "NaN".into(),
        f64::INFINITY => "Infinity".into(),
        f64::NEG_INFINITY => "-Infinity".into(),
        v => v.to_string(),
    }
}

/// A numeric's binary form (digit count, weight, sign, display scale, then base-10000 digits,
/// the first of them worth 10000^weight) as numeric_out writes it: every digit of the display
/// scale, NaN and the infinities by name. None for bytes no server sends.
fn numeric_text(b: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<u16> {
        Some(u16::from_be_bytes(
            b.get(2 * i..2 * i + 2)?.try_into().ok()?,
        ))
    };
    let (ndigits, weight, sign, dscale) = (word(0)? as usize, word(1)? as i16, word(2)?, word(3)?);
    if b.len() != 8 + 2 * ndigits || dscale > 0x3FFF {
        return None;
    }
    let digit = |i: i64| -> Option<u16> {
        match usize::try_from(i) {
            Ok(i) if i < ndigits => word(4 + i).filter(|&d| d < 10_000),
            _ => Some(0),
        }
    };
    let mut out = match sign {
        0x0000 => String::new(),
        0x4000 => "-".to_string(),
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => return None,
    };
    if weight < 0 {
        out.push('0');
    }
    for i in 0..=i64::from(weight) {
        let d = digit(i)?;
        match i {
            0 => out.push_str(&d.to_string()),
            _ => out.push_str(&format!("{d:04}")),
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut i = i64::from(weight) + 1;
        while frac.len() < dscale as usize {
            frac.push_str(&format!("{:04}", digit(i)?));
            i += 1;
        }
        frac.truncate(dscale as usize);
        out.push('.');
        out.push_str(&frac);
    }
    Some(out)
}

/// A text-format integer as drivers send keys (an optional sign and decimal digits), read as
/// `str::parse` reads it but without the UTF-8 check and the trims, which cost more than the
/// digits on the path of every bound lookup. None for anything else (blanks, overflow ...),
/// which the general reading then takes.
fn plain_integer(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first()? {
        (b'-', rest) => (true, rest),
        (b'+', rest) => (false, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        // Built on the negative side, which reaches i64::MIN.
        v = v.checked_mul(10)?.checked_sub((d - b'0') as i64)?;
    }
    if negative {
        Some(v)
    } else {
        v.checked_neg()
    }
}

#[cfg(test)]
mod tests;
