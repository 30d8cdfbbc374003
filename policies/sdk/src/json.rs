//! The SDK's JSON reader: the host's JSON straight into the model's types, in one pass.
//!
//! Every evaluation parses its tenant (and its platform lookups), and a sandbox is fresh for
//! each evaluation, so this is the hot path of every policy. A generic deserializer spends most
//! of its instructions on what the model does not need: it builds and checks every value it
//! skips, and matches keys through visitor layers. This reader matches keys directly and skips
//! unknown values by scanning their brackets and strings, and it holds no tables, so the
//! module's data (copied into every fresh sandbox) stays small.
//!
//! It reads what serde_json reads for the same types: the SDK's tests compare the two on
//! generated and mutated documents. Like the model, it is lenient about unknown fields and
//! missing ones (they keep their defaults), and strict about the type of a field it knows.

use crate::model::*;
use std::borrow::Cow;

/// Why a document could not be read, and at which byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub at: usize,
    pub what: Cow<'static, str>,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

pub type Result<T> = core::result::Result<T, Error>;

/// A value the reader can build.
pub trait FromJson: Sized {
    fn read(r: &mut Reader<'_>) -> Result<Self>;
}

/// Read a whole document: one value, then nothing but whitespace.
pub fn from_str<T: FromJson>(s: &str) -> Result<T> {
    let mut r = Reader { s: s.as_bytes(), at: 0 };
    let v = T::read(&mut r)?;
    r.ws();
    if r.at != r.s.len() {
        return Err(r.error("trailing characters"));
    }
    Ok(v)
}

/// Nesting deeper than this in a skipped value is refused (the schemas nest a few levels).
const MAX_DEPTH: usize = 128;

pub struct Reader<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, what: &'static str) -> Error {
        Error { at: self.at, what: Cow::Borrowed(what) }
    }

    fn ws(&mut self) {
        // One comparison when there is none, as in the compact JSON the host sends.
        while let Some(&b) = self.s.get(self.at) {
            if b > b' ' || !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.at += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.at).copied()
    }

    fn expect(&mut self, b: u8, what: &'static str) -> Result<()> {
        if self.peek() == Some(b) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<()> {
        if self.s[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(self.error("expected a value"))
        }
    }

    /// `null`, consumed, or false with nothing consumed.
    pub fn null(&mut self) -> Result<bool> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The members of an object: `each` is called with every key, the reader before its value,
    /// and must read or skip the value. A repeated key is refused, as serde refuses it for a
    /// known field: `each` returns the index of the known field it read, if any.
    pub fn object(&mut self, mut each: impl FnMut(&mut Self, &str) -> Result<Option<usize>>) -> Result<()> {
        let mut seen = 0u64;
        self.sequence(b'{', b'}', "expected an object", "expected `,` or `}`", |r| {
            if r.peek() != Some(b'"') {
                return Err(r.error("expected a key"));
            }
            r.at += 1;
            let key = r.string_body()?;
            r.expect(b':', "expected `:`")?;
            let at = r.at;
            if let Some(i) = each(r, &key)? {
                if seen & (1 << i) != 0 {
                    return Err(Error { at, what: Cow::Owned(format!("duplicate field `{key}`")) });
                }
                seen |= 1 << i;
            }
            Ok(())
        })
    }

    /// The items of an array, each read by `each`.
    fn array(&mut self, each: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        self.sequence(b'[', b']', "expected an array", "expected `,` or `]`", each)
    }

    /// `open`, items separated by commas, `close`.
    fn sequence(
        &mut self,
        open: u8,
        close: u8,
        expected: &'static str,
        separator: &'static str,
        mut each: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        self.expect(open, expected)?;
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(());
        }
        loop {
            each(self)?;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b) if b == close => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(self.error(separator)),
            }
        }
    }

    /// A string, borrowed from the document when it has no escapes.
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        self.expect(b'"', "expected a string")?;
        self.string_body()
    }

    /// The rest of a string whose opening quote was just read.
    fn string_body(&mut self) -> Result<Cow<'a, str>> {
        let start = self.at;
        self.at = self.plain(start);
        match self.s.get(self.at) {
            Some(b'"') => {
                let text = self.text(start, self.at);
                self.at += 1;
                return Ok(Cow::Borrowed(text));
            }
            Some(b'\\') => {}
            Some(_) => return Err(self.error("control character in a string")),
            None => return Err(self.error("unterminated string")),
        }
        let mut out = String::from(self.text(start, self.at));
        let mut run = self.at;
        loop {
            self.at = self.plain(self.at);
            match self.s.get(self.at) {
                Some(b'"') => {
                    out.push_str(self.text(run, self.at));
                    self.at += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    out.push_str(self.text(run, self.at));
                    self.at += 1;
                    self.escape(&mut out)?;
                    run = self.at;
                }
                Some(_) => return Err(self.error("control character in a string")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    /// Where the plain run of a string that starts at `from` ends: the first quote, backslash
    /// or control character, or the end of the document. Eight bytes at a time: strings are
    /// most of a manifest's bytes.
    fn plain(&self, from: usize) -> usize {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let s = self.s;
        let mut i = from;
        while let Some(word) = s.get(i..i + 8) {
            let x = u64::from_le_bytes(word.try_into().unwrap_or_default());
            let quote = x ^ (ONES * u64::from(b'"'));
            let backslash = x ^ (ONES * u64::from(b'\\'));
            // The high bit of each byte that is zero (a quote or backslash in `x`) or below
            // 0x20; above the lowest such byte there may be false marks, never below it.
            let marks = (quote.wrapping_sub(ONES) & !quote
                | backslash.wrapping_sub(ONES) & !backslash
                | x.wrapping_sub(ONES * 0x20) & !x)
                & HIGH;
            if marks != 0 {
                return i + (marks.trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
        while let Some(&b) = s.get(i) {
            if matches!(b, b'"' | b'\\' | 0..=0x1f) {
                break;
            }
            i += 1;
        }
        i
    }

    /// The document between two positions the reader stopped at: each is the start, the end,
    /// or an ASCII byte (a quote or a backslash), so the slice is whole UTF-8 sequences of the
    /// `&str` the reader was made from ([`from_str`], its only constructor).
    fn text(&self, from: usize, to: usize) -> &'a str {
        // SAFETY: see above; `self.s` is a `&str`'s bytes and both ends are char boundaries.
        unsafe { core::str::from_utf8_unchecked(&self.s[from..to]) }
    }

    /// One escape after its `\`.
    fn escape(&mut self, out: &mut String) -> Result<()> {
        let Some(&c) = self.s.get(self.at) else {
            return Err(self.error("unterminated string"));
        };
        self.at += 1;
        out.push(match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    if !self.s[self.at..].starts_with(b"\\u") {
                        return Err(self.error("unpaired surrogate"));
                    }
                    self.at += 2;
                    let lo = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err(self.error("unpaired surrogate"));
                    }
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                char::from_u32(code).ok_or_else(|| self.error("unpaired surrogate"))?
            }
            _ => return Err(self.error("invalid escape")),
        });
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits = self.s.get(self.at..self.at + 4).ok_or_else(|| self.error("invalid \\u escape"))?;
        let mut n = 0;
        for &d in digits {
            let v = (d as char).to_digit(16).ok_or_else(|| self.error("invalid \\u escape"))?;
            n = n * 16 + v;
        }
        self.at += 4;
        Ok(n)
    }

    /// An unsigned integer as serde_json reads a `u64`: digits only, no sign, fraction or
    /// exponent (serde_json reads `-0` as a float).
    fn unsigned(&mut self) -> Result<u64> {
        self.ws();
        let start = self.at;
        while let Some(b'0'..=b'9') = self.s.get(self.at) {
            self.at += 1;
        }
        // Nineteen digits cannot overflow; only a twentieth is checked (wasm32 has no cheap
        // overflow test for a 64-bit multiplication).
        let all = &self.s[start..self.at];
        let (head, tail) = all.split_at(all.len().min(19));
        let mut n = head.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        for d in tail {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
                .ok_or_else(|| self.error("number out of range for an unsigned integer"))?;
        }
        let digits = self.at - start;
        if digits == 0 || digits > 1 && self.s[start] == b'0' {
            self.at = start;
            return Err(self.error("expected an unsigned integer"));
        }
        if let Some(b'.' | b'e' | b'E') = self.s.get(self.at) {
            return Err(self.error("expected an unsigned integer"));
        }
        Ok(n)
    }

    /// Skip one value of any kind, checking its brackets and strings. What is open is kept on
    /// a fixed stack: nesting past [`MAX_DEPTH`] is refused as it is met.
    pub fn skip(&mut self) -> Result<()> {
        let mut open = [0u8; MAX_DEPTH];
        let mut depth = 0;
        loop {
            // A value.
            match self.peek() {
                Some(b'"') => {
                    self.skip_string()?;
                }
                Some(open_with @ (b'{' | b'[')) => {
                    self.at += 1;
                    let close = if open_with == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                    } else {
                        if depth == MAX_DEPTH {
                            return Err(self.error("nested too deeply"));
                        }
                        open[depth] = close;
                        depth += 1;
                        if close == b'}' {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.skip_number()?,
                _ => return Err(self.error("expected a value")),
            }
            // What follows it: the next member or item, or the end of a container.
            loop {
                let Some(close) = depth.checked_sub(1).map(|top| open[top]) else {
                    return Ok(());
                };
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if close == b'}' {
                            self.member_key()?;
                        }
                        break;
                    }
                    Some(b) if b == close => {
                        self.at += 1;
                        depth -= 1;
                    }
                    _ => return Err(self.error("expected `,` or the end of a container")),
                }
            }
        }
    }

    fn member_key(&mut self) -> Result<()> {
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a key"));
        }
        self.skip_string()?;
        self.expect(b':', "expected `:`")
    }

    fn skip_string(&mut self) -> Result<()> {
        self.at += 1;
        loop {
            self.at = self.plain(self.at);
            match self.s.get(self.at) {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    // Checked as serde_json checks a string it ignores: a known escape, and
                    // four hex digits after `\u` (paired surrogates or not).
                    match self.s.get(self.at + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.at += 2,
                        Some(b'u') => {
                            self.at += 2;
                            self.hex4()?;
                        }
                        _ => return Err(self.error("invalid escape")),
                    }
                }
                Some(_) => return Err(self.error("control character in a string")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    /// A JSON number: `-`? int (`.` digits)? (`e` sign? digits)?
    fn skip_number(&mut self) -> Result<()> {
        let digits = |r: &mut Self| {
            let start = r.at;
            while let Some(b'0'..=b'9') = r.s.get(r.at) {
                r.at += 1;
            }
            r.at - start
        };
        if self.s.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        let start = self.at;
        let n = digits(self);
        if n == 0 || n > 1 && self.s[start] == b'0' {
            return Err(self.error("invalid number"));
        }
        if self.s.get(self.at) == Some(&b'.') {
            self.at += 1;
            if digits(self) == 0 {
                return Err(self.error("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.s.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.s.get(self.at) {
                self.at += 1;
            }
            if digits(self) == 0 {
                return Err(self.error("invalid number"));
            }
        }
        Ok(())
    }
}

impl FromJson for String {
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        if r.peek() != Some(b'"') {
            return Err(r.error("expected a string"));
        }
        r.at += 1;
        r.string_body().map(Cow::into_owned)
    }
}

impl FromJson for u64 {
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        r.unsigned()
    }
}

impl FromJson for bool {
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        match r.peek() {
            Some(b't') => r.literal(b"true").map(|()| true),
            Some(b'f') => r.literal(b"false").map(|()| false),
            _ => Err(r.error("expected a boolean")),
        }
    }
}

impl<T: FromJson> FromJson for Option<T> {
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        if r.null()? { Ok(None) } else { T::read(r).map(Some) }
    }
}

impl<T: FromJson> FromJson for Vec<T> {
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        // Room for the few items a manifest's lists hold, so they rarely grow (and copy).
        let mut out = Vec::with_capacity(4);
        r.array(|r| {
            out.push(T::read(r)?);
            Ok(())
        })?;
        Ok(out)
    }
}

/// A struct of the model, from an object: each field under its JSON key, other keys skipped,
/// absent ones left at their default (serde's `#[serde(default)]` on the struct).
macro_rules! from_json {
    ($($t:ident { $($field:ident: $key:literal),* $(,)? })*) => {$(
        impl FromJson for $t {
            fn read(r: &mut Reader<'_>) -> Result<Self> {
                let mut v = $t::default();
                r.object(|r, key| {
                    let mut _i = 0;
                    $(
                        if key == $key {
                            v.$field = FromJson::read(r)?;
                            return Ok(Some(_i));
                        }
                        _i += 1;
                    )*
                    r.skip().map(|()| None)
                })?;
                Ok(v)
            }
        }
    )*};
}

from_json! {
    Tenant { metadata: "metadata", spec: "spec" }
    TenantMetadata { id: "id", organization: "organization", display_name: "displayName" }
    TenantSpec {
        profile: "profile", lifecycle: "lifecycle", plan: "plan", regions: "regions",
        environments: "environments", quotas: "quotas", policies: "policies", deletion: "deletion",
    }
    Regions { allowed: "allowed", preferred: "preferred" }
    Environment {
        name: "name", region: "region", quotas: "quotas", retention_days: "retentionDays",
        isolation: "isolation",
    }
    Quotas { storage_gib: "storageGiB", concurrent_jobs: "concurrentJobs", api_rate_limit: "apiRateLimit" }
    Policies { data_residency: "dataResidency", encryption: "encryption", retention_days: "retentionDays" }
    Deletion { confirm: "confirm", reason: "reason" }
    Named { name: "name" }
    Region { metadata: "metadata", spec: "spec" }
    RegionSpec { residency_zone: "residencyZone", encryption: "encryption" }
    RegionEncryption { per_tenant_keys: "perTenantKeys" }
    Plan { metadata: "metadata", spec: "spec" }
    PlanSpec { profiles: "profiles", ceilings: "ceilings", max_retention_days: "maxRetentionDays" }
    Ceilings { storage_gib: "storageGiB", concurrent_jobs: "concurrentJobs", api_rate_limit: "apiRateLimit" }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
