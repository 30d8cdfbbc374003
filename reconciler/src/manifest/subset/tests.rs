//! The subset against the general parser: whenever the subset answers, the answers agree.

use super::*;
use crate::manifest::yaml::general_json_documents;

/// A small deterministic generator (xorshift64*), so a failure names a case to replay.
struct Rng {
    state: u64,
    /// Whether odd spellings (indentation wobbles, tight comments, raw quotes, every
    /// indicator inside scalars) are mixed in, or the files are mostly as people write them.
    hostile: bool,
}

impl Rng {
    fn new(seed: u64, hostile: bool) -> Rng {
        Rng {
            state: seed,
            hostile,
        }
    }
    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// An odd spelling, `percent` of the time in hostile files, never in the others.
    fn odd(&mut self, percent: usize) -> bool {
        self.hostile && self.chance(percent)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'p>(&mut self, from: &[&'p str]) -> &'p str {
        from[self.below(from.len())]
    }
}

/// Pieces of scalars: ordinary words, every typing corner, every indicator.
/// The first 30 are the ones a manifest's values are mostly made of.
const PIECES: &[&str] = &[
    "a",
    "b",
    "dev",
    "eu-west-1",
    "Acme Analytics",
    "ops-0@org.example",
    "cc-12",
    "t_5002",
    "1",
    "0",
    "-5",
    "42",
    "null",
    "true",
    "false",
    "é",
    "日本",
    " ",
    "x:y",
    "a b",
    ",",
    "'",
    "\"",
    "http://h/p?q=1#f",
    "a#b",
    "R&D",
    "x-y_z.w",
    "v1/beta",
    "~",
    "q?",
    "007",
    "-0",
    "+1",
    "1e3",
    ".5",
    "1.0",
    "0x1F",
    "0o17",
    "1_000",
    "123456789012345678901",
    "null",
    "Null",
    "NULL",
    "nULL",
    "~",
    "true",
    "True",
    "TRUE",
    "tRUE",
    "false",
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    ".inf",
    "-.inf",
    ".NaN",
    "inf",
    "nan",
    "2024-01-01",
    "é",
    "日本",
    "\u{a0}",
    " ",
    "  ",
    ":",
    ": ",
    "::",
    "#",
    " #",
    "-",
    "- ",
    "--",
    "---",
    "...",
    "?",
    "? ",
    "&a",
    "*a",
    "!",
    "!!str",
    "|",
    ">",
    "%",
    "@",
    "`",
    ",",
    ", ",
    "[",
    "]",
    "{",
    "}",
    "'",
    "''",
    "\"",
    "\\",
    "\\n",
    "<<",
    "=",
    "x:y",
    "http://h/p?q=1#f",
    "a b",
    "\t",
    "\r",
    "\u{85}",
    "\u{2028}",
    "\u{feff}",
    "\u{7f}",
];

fn scalar(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..1 + rng.below(3) {
        // Mostly what manifests hold, so that whole files stay inside the subset often.
        let from = if rng.odd(8) { PIECES } else { &PIECES[..30] };
        s.push_str(rng.pick(from));
    }
    match rng.below(6) {
        0 => format!("\"{}\"", s.replace(['"', '\\'], "")),
        1 => format!("'{}'", s.replace('\'', "''")),
        2 if rng.hostile => format!("\"{s}\""),
        _ => s,
    }
}

fn word(rng: &mut Rng) -> String {
    if rng.chance(80) {
        rng.pick(&[
            "id", "name", "spec", "plan", "kind", "labels", "a", "b", "c",
        ])
        .to_owned()
    } else {
        scalar(rng)
    }
}

fn spaces(rng: &mut Rng) -> &'static str {
    if rng.hostile {
        rng.pick(&[" ", " ", " ", "", "  "])
    } else {
        rng.pick(&[" ", " ", "  "])
    }
}

fn flow(rng: &mut Rng, depth: usize, out: &mut String) {
    let map = rng.chance(50);
    out.push(if map { '{' } else { '[' });
    out.push_str(spaces(rng));
    let n = rng.below(4);
    for k in 0..n {
        if k > 0 {
            out.push(',');
            out.push_str(spaces(rng));
        }
        if map {
            out.push_str(&word(rng));
            out.push(':');
            out.push_str(spaces(rng));
        }
        if depth < 3 && rng.chance(20) {
            flow(rng, depth + 1, out);
        } else {
            out.push_str(&scalar(rng));
        }
    }
    if rng.odd(5) {
        out.push(',');
    }
    out.push_str(spaces(rng));
    out.push(if map { '}' } else { ']' });
}

fn value(rng: &mut Rng, indent: usize, depth: usize, out: &mut String) {
    match rng.below(10) {
        0..=3 => {
            out.push_str(if rng.odd(5) { "" } else { " " });
            out.push_str(&scalar(rng));
            comment(rng, out);
        }
        4 | 5 => {
            out.push_str(if rng.odd(5) { "" } else { " " });
            flow(rng, depth, out);
            comment(rng, out);
        }
        6 if rng.chance(70) => comment(rng, out),
        _ if depth < 5 => {
            comment(rng, out);
            let step = rng.pick(&["  ", "  ", "    ", " ", ""]).len();
            block(rng, indent + step, depth + 1, out);
        }
        _ => out.push_str(" x\n"),
    }
}

fn comment(rng: &mut Rng, out: &mut String) {
    if rng.chance(10) {
        let tight = rng.odd(30);
        out.push_str(if tight {
            "# tight"
        } else {
            rng.pick(&[" # note", "  #"])
        });
    }
    out.push('\n');
    if rng.chance(5) {
        out.push_str(rng.pick(&["\n", "# c\n", "   \n", "  # c\n"]));
    }
}

fn block(rng: &mut Rng, indent: usize, depth: usize, out: &mut String) {
    // A document's root is a mapping, as a manifest's is (mostly).
    let seq = depth > 0 && rng.chance(30) || rng.odd(2);
    for _ in 0..1 + rng.below(4) {
        let wobble = match rng.below(100) {
            0 if rng.hostile => indent + 1,
            1 if rng.hostile => indent.saturating_sub(1),
            _ => indent,
        };
        out.push_str(&" ".repeat(wobble));
        if seq {
            out.push('-');
            if rng.chance(40) {
                // A compact mapping as the item.
                out.push(' ');
                let inner = indent + 2;
                out.push_str(&word(rng));
                out.push(':');
                value(rng, inner, depth + 1, out);
                for _ in 0..rng.below(3) {
                    out.push_str(&" ".repeat(inner));
                    out.push_str(&word(rng));
                    out.push(':');
                    value(rng, inner, depth + 1, out);
                }
            } else {
                value(rng, indent, depth, out);
            }
        } else {
            out.push_str(&word(rng));
            out.push_str(rng.pick(&[":", ":", ":", ":", " :"]));
            value(rng, indent, depth, out);
        }
    }
}

fn document(rng: &mut Rng) -> String {
    let mut out = String::new();
    if rng.chance(10) {
        out.push_str("# leading\n\n");
    }
    for d in 0..1 + rng.below(3) {
        if d > 0 || rng.chance(20) {
            let content = rng.odd(20);
            out.push_str(if content {
                "--- x\n"
            } else {
                rng.pick(&["---\n", "--- # c\n"])
            });
        }
        let indent = if rng.chance(5) { 2 } else { 0 };
        block(rng, indent, 0, &mut out);
    }
    if rng.odd(5) {
        out.push_str(rng.pick(&["...\n", "---\n"]));
    }
    out
}

/// Whenever the subset answers, the general parser gives the same answer.
fn agrees(text: &str) -> bool {
    let limits = YamlLimits::default();
    let Some(fast) = scan_documents(text, &limits) else {
        return false;
    };
    let general = general_json_documents(text, &limits);
    assert_eq!(
        Some(&fast),
        general.as_ref(),
        "the subset disagrees on\n{text}"
    );
    true
}

#[test]
fn generated_files_read_as_the_general_parser_reads_them() {
    for (hostile, at_least) in [(false, 15), (true, 2)] {
        let mut rng = Rng::new(0x7e4a_4c79_5eed_0001, hostile);
        let (mut taken, total) = (0, 10_000);
        for _ in 0..total {
            if agrees(&document(&mut rng)) {
                taken += 1;
            }
        }
        // Not vacuous: a good part of the generated files is inside the subset.
        eprintln!("hostile {hostile}: {taken} of {total} inside the subset, all agreeing");
        assert!(
            taken * 100 > total * at_least,
            "hostile {hostile}: {taken} of {total} taken"
        );
    }
}

#[test]
fn mutated_manifests_read_as_the_general_parser_reads_them() {
    let examples = examples();
    let mut rng = Rng::new(0x5eed_0000_0000_0002, true);
    let mut taken = 0;
    for _ in 0..20_000 {
        let mut text = examples[rng.below(examples.len())].clone();
        for _ in 0..1 + rng.below(3) {
            let mut at = rng.below(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let piece = match rng.below(4) {
                0 => "\n",
                1 => rng.pick(&["  ", "- ", ": ", "\n  ", "\n- ", "---\n"]),
                _ => rng.pick(PIECES),
            };
            match rng.below(3) {
                0 => text.insert_str(at, piece),
                1 => {
                    let mut end = (at + 1 + rng.below(4)).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    text.replace_range(at..end, piece);
                }
                _ => {
                    let mut end = (at + 1).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    text.replace_range(at..end, "");
                }
            }
        }
        if agrees(&text) {
            taken += 1;
        }
    }
    eprintln!("{taken} of 20000 mutations inside the subset, all agreeing");
    assert!(taken > 2_000, "{taken} mutations taken");
}

/// Every example manifest in `tenants/`, and one tenant as the scale generator writes it.
fn examples() -> Vec<String> {
    let mut texts = vec![GENERATED.to_owned()];
    texts.extend(
        crate::testing::example_manifests()
            .into_iter()
            .map(|(_, t)| t),
    );
    texts
}

const GENERATED: &str = "apiVersion: tenancy.dev/v1
kind: Tenant
metadata:
  id: t_100200
  organization: org_00000
  displayName: Tenant 200 of org_00000
  labels: { team: team-6, tier: enterprise }
spec:
  profile: hybrid
  lifecycle: Deleted
  plan: enterprise
  regions: { allowed: [eu-west-1, eu-central-1], preferred: eu-west-1 }
  environments:
    - { name: qa, quotas: { storageGiB: 10000 }, retentionDays: 14 }
  quotas: { storageGiB: 10000, concurrentJobs: 100, apiRateLimit: 5000 }
  policies: { dataResidency: in-zone, encryption: kms-per-tenant, retentionDays: 30 }
  billing: { plan: enterprise, costCenter: cc-200 }
  contacts: { technical: ops-200@org_00000.example, incident: oncall@org_00000.example }
  externalIds: { crm: \"crm-00000200\", billing: \"cus_00000200\" }
  deletion: { confirm: t_100200, reason: generated }
";

#[test]
fn the_examples_and_generated_tenants_are_inside_the_subset() {
    for text in &examples() {
        assert!(agrees(text), "outside the subset:\n{text}");
    }
}

#[test]
fn outside_the_subset_the_general_parser_decides() {
    let limits = YamlLimits::default();
    for text in [
        "a: &x 1\nb: *x\n",
        "a: !!str 1\n",
        "a: |\n  text\n",
        "a: 1\na: 2\n",
        "a: { b: 1, b: 2 }\n",
        "a: 0x1F\n",
        "a: yes\nb: 1.5\n",
        "a:\tb\n",
        "a: b\r\n",
        "\u{feff}a: b\n",
        "a: \"esc\\n\"\n",
        "a: [1,\n  2]\n",
        "a: plain\n  continued\n",
        "<<: { a: 1 }\n",
        "? a\n: b\n",
        "%YAML 1.2\n---\na: 1\n",
        "- a\n- b\n",
        "a: 1\n...\n",
        "a: 1\n---\n",
        "",
        "# only\n",
    ] {
        assert_eq!(scan_documents(text, &limits), None, "{text:?}");
    }
    // What it does take, it types as YAML 1.2 does.
    let docs = scan_documents(
        "# c\n---\nn: ~\nt: True\ni: -42\ns: 'it''s'\nq: \"a # b\"\nu: http://h/x#y\n\
         l:\n- [a, 1, null]\n- { k: v }\n---\nz: 0\n",
        &limits,
    )
    .expect("inside the subset");
    assert_eq!(docs.len(), 2);
    assert_eq!(
        docs[0].0,
        serde_json::json!({"n": null, "t": true, "i": -42, "s": "it's", "q": "a # b",
            "u": "http://h/x#y", "l": [["a", 1, null], {"k": "v"}]})
    );
    assert_eq!((docs[0].1.line, docs[0].1.column), (3, 1));
    assert_eq!((docs[1].1.line, docs[1].1.column), (13, 1));
}
