//! The reader against serde_json, on the same documents and types: generated manifests and
//! inventory entries, and mutations of them.
//!
//! Where both read a document they must give the same value. The reader may never take a
//! document serde_json refuses. It may refuse one serde_json takes in one case only: an array
//! where the model has a struct (serde reads a struct's fields from an array, in order; no
//! manifest is written so, and the schema refuses it).

use super::*;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// xorshift64*: the tests are reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const WORDS: &[&str] = &[
    "eu-west-1", "eu-central-1", "us-east-1", "Active", "Deleted", "mt-standard", "business", "", "ü-é",
    "a\"quote", "back\\slash", "tab\there", "nl\nx", "ctl\u{1}", "😀", "~/", "t_5001",
];

fn string(r: &mut Rng) -> Value {
    Value::String((*r.pick(WORDS)).to_owned())
}

/// An integer a u64 field takes.
fn number(r: &mut Rng) -> Value {
    match r.below(6) {
        0 => json!(0),
        1 => json!(u64::MAX),
        _ => json!(r.below(100_000)),
    }
}

/// A number no u64 field takes.
fn not_unsigned(r: &mut Rng) -> Value {
    r.pick(&[json!(-1), json!(1.5), json!(1e3), json!(-0.0), json!(-12.5e-3), json!(1.0)]).clone()
}

/// Anything, as an unknown field holds.
fn any(r: &mut Rng, depth: usize) -> Value {
    match r.below(if depth > 3 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(r.one_in(2)),
        2 => number(r),
        3 => not_unsigned(r),
        4 => string(r),
        5 | 6 => {
            let mut m = serde_json::Map::new();
            for _ in 0..r.below(4) {
                m.insert((*r.pick(WORDS)).to_owned(), any(r, depth + 1));
            }
            Value::Object(m)
        }
        _ => Value::Array((0..r.below(4)).map(|_| any(r, depth + 1)).collect()),
    }
}

/// A value for a known field: almost always of its type, now and then anything at all.
fn typed(r: &mut Rng, good: impl FnOnce(&mut Rng) -> Value) -> Value {
    match r.below(80) {
        0 => any(r, 2),
        1 => not_unsigned(r),
        _ => good(r),
    }
}

/// An object with `fields` (each present or not) and perhaps some unknown ones.
fn object(fields: Vec<(&str, Value)>, r: &mut Rng) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in fields {
        if !r.one_in(6) {
            m.insert(k.to_owned(), v);
        }
        if r.one_in(5) {
            m.insert(format!("x-{}", r.below(3)), any(r, 1));
        }
    }
    Value::Object(m)
}

fn quotas(r: &mut Rng) -> Value {
    let fields = vec![
        ("storageGiB", typed(r, number)),
        ("concurrentJobs", typed(r, number)),
        ("apiRateLimit", typed(r, number)),
    ];
    object(fields, r)
}

fn optional(r: &mut Rng, good: impl FnOnce(&mut Rng) -> Value) -> Value {
    if r.one_in(4) { Value::Null } else { typed(r, good) }
}

fn tenant(r: &mut Rng) -> Value {
    let metadata = {
        let fields = vec![
            ("id", typed(r, string)),
            ("organization", typed(r, string)),
            ("displayName", optional(r, string)),
            ("labels", any(r, 2)),
        ];
        object(fields, r)
    };
    let environments: Vec<Value> = (0..r.below(4))
        .map(|_| {
            let fields = vec![
                ("name", typed(r, string)),
                ("region", optional(r, string)),
                ("quotas", typed(r, quotas)),
                ("retentionDays", optional(r, number)),
                ("isolation", optional(r, string)),
            ];
            object(fields, r)
        })
        .collect();
    let spec = {
        let allowed: Vec<Value> = (0..r.below(4)).map(|_| string(r)).collect();
        let fields = vec![
            ("profile", typed(r, string)),
            ("lifecycle", typed(r, string)),
            ("plan", typed(r, string)),
            ("regions", object(vec![("allowed", Value::Array(allowed)), ("preferred", string(r))], r)),
            ("environments", Value::Array(environments)),
            ("quotas", typed(r, quotas)),
            ("policies", {
                let fields = vec![
                    ("dataResidency", optional(r, string)),
                    ("encryption", optional(r, string)),
                    ("retentionDays", optional(r, number)),
                ];
                object(fields, r)
            }),
            ("deletion", optional(r, |r| object(vec![("confirm", string(r)), ("reason", string(r))], r))),
            ("contacts", any(r, 1)),
        ];
        object(fields, r)
    };
    object(vec![("apiVersion", json!("tenancy.dev/v1")), ("metadata", metadata), ("spec", spec)], r)
}

fn region(r: &mut Rng) -> Value {
    let encryption = object(vec![("perTenantKeys", typed(r, |r| Value::Bool(r.one_in(2))))], r);
    let spec = object(vec![("residencyZone", typed(r, string)), ("encryption", encryption)], r);
    object(vec![("metadata", object(vec![("name", string(r))], r)), ("spec", spec)], r)
}

fn plan(r: &mut Rng) -> Value {
    let profiles: Vec<Value> = (0..r.below(3)).map(|_| string(r)).collect();
    let ceilings = {
        let fields = vec![
            ("storageGiB", typed(r, number)),
            ("concurrentJobs", typed(r, number)),
            ("apiRateLimit", typed(r, number)),
        ];
        object(fields, r)
    };
    let fields = vec![("profiles", Value::Array(profiles)), ("ceilings", ceilings), ("maxRetentionDays", optional(r, number))];
    let spec = object(fields, r);
    object(vec![("metadata", object(vec![("name", string(r))], r)), ("spec", spec)], r)
}

/// Does `v` hold an array where the model (`kind`) has a struct?
fn array_for_struct(v: &Value, kind: &str) -> bool {
    if kind == "envs" {
        return v.as_array().is_some_and(|items| items.iter().any(|e| array_for_struct(e, "env")));
    }
    if v.is_array() {
        return true;
    }
    let children: &[(&str, &str)] = match kind {
        "tenant" => &[("metadata", "leaf"), ("spec", "spec")],
        "spec" => &[("regions", "leaf"), ("quotas", "leaf"), ("policies", "leaf"), ("deletion", "leaf"), ("environments", "envs")],
        "env" => &[("quotas", "leaf")],
        "region" => &[("metadata", "leaf"), ("spec", "rspec")],
        "rspec" => &[("encryption", "leaf")],
        "plan" => &[("metadata", "leaf"), ("spec", "pspec")],
        "pspec" => &[("ceilings", "leaf")],
        _ => &[],
    };
    v.as_object().is_some_and(|m| children.iter().any(|(k, sub)| m.get(*k).is_some_and(|c| array_for_struct(c, sub))))
}

/// Read `doc` both ways and hold the reader to serde_json. Whether the reader took it.
fn agree<T: FromJson + DeserializeOwned + core::fmt::Debug>(doc: &str, kind: &str) -> bool {
    let ours = from_str::<T>(doc);
    let theirs = serde_json::from_str::<T>(doc);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{doc}"),
        (Ok(a), Err(e)) => panic!("the reader took what serde_json refuses ({e}):\n{doc}\n{a:?}"),
        (Err(e), Ok(b)) => {
            let array = serde_json::from_str::<Value>(doc).is_ok_and(|v| array_for_struct(&v, kind));
            assert!(array, "the reader refused ({e}) what serde_json takes:\n{doc}\n{b:?}");
        }
        (Err(_), Err(_)) => {}
    }
    ours.is_ok()
}

const EDITS: &[&str] = &[
    "\"", "\\", "{", "}", "[", "]", ",", ":", " ", "\n", "0", "-", ".", "e", "n", "t", "u", "\u{1}", "é",
    "\\u00e9", "\\ud83d\\ude00", "\\ud83d", "\\udc00", "\\x", "null", "[]", "{}", "1.5", "-0", "007",
    "18446744073709551616", "true", "\"plan\":\"x\",", "\"spec\":{},",
];

/// `doc` with a few edits at char boundaries.
fn mutate(r: &mut Rng, doc: &str) -> String {
    let mut s = doc.to_owned();
    for _ in 0..1 + r.below(3) {
        let bounds: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
        let at = *r.pick(&bounds);
        let next = bounds.iter().copied().find(|&b| b > at).unwrap_or(at);
        match r.below(3) {
            0 => s.replace_range(at..next, ""),
            1 => s.insert_str(at, *r.pick(EDITS)),
            _ => s.replace_range(at..next, *r.pick(EDITS)),
        }
    }
    s
}

fn check<T: FromJson + DeserializeOwned + core::fmt::Debug>(seed: u64, kind: &str, make: fn(&mut Rng) -> Value) {
    let mut r = Rng(seed);
    let (mut plain, mut mutated) = ((0, 0), (0, 0));
    for i in 0..3_000 {
        let v = make(&mut r);
        let doc = if i % 3 == 0 { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.expect("json");
        plain.0 += 1;
        plain.1 += usize::from(agree::<T>(&doc, kind));
        for _ in 0..4 {
            let m = mutate(&mut r, &doc);
            mutated.0 += 1;
            mutated.1 += usize::from(agree::<T>(&m, kind));
        }
    }
    println!("{kind}: took {} of {} documents, {} of {} mutations", plain.1, plain.0, mutated.1, mutated.0);
    // Most generated documents are well typed, and a good share of mutations still read.
    assert!(plain.1 * 2 > plain.0, "{kind}: the reader took {} of {} documents", plain.1, plain.0);
    assert!(mutated.1 * 20 > mutated.0, "{kind}: the reader took {} of {} mutations", mutated.1, mutated.0);
}

#[test]
fn reads_tenants_as_serde_json_does() {
    check::<Tenant>(0x5eed_0001, "tenant", tenant);
}

#[test]
fn reads_regions_and_plans_as_serde_json_does() {
    check::<Region>(0x5eed_0002, "region", region);
    check::<Plan>(0x5eed_0003, "plan", plan);
}

#[test]
fn decodes_escapes_and_reports_where_it_stopped() {
    let t: Tenant = from_str(r#"{"metadata":{"id":"a\u00e9\ud83d\ude00\n\/\"","displayName":null}}"#).expect("read");
    assert_eq!(t.metadata.id, "aé😀\n/\"");
    assert_eq!(t.metadata.display_name, None);
    let e = from_str::<Tenant>(r#"{"spec":{"quotas":{"storageGiB":1.5}}}"#).expect_err("float");
    assert_eq!(e.to_string(), "expected an unsigned integer at byte 33");
    let e = from_str::<Tenant>(r#"{"spec":{"plan":"a","plan":"b"}}"#).expect_err("twice");
    assert!(e.to_string().starts_with("duplicate field `plan`"), "{e}");
    // An unknown value nested past the limit is refused, not followed down the stack.
    let deep = format!(r#"{{"x":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(from_str::<Tenant>(&deep).expect_err("deep").what, "nested too deeply");
}
