//! The sandbox under attack: one hostile module per class (reading, compiling, memory, the
//! contract, output floods, forged output), each refused with its reason in bounded time by
//! the real `tenancy` binary, while the standard policies go on judging every tenant.

use crate::support::{TestRepo, workspace_root};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: a refusal takes seconds. This only turns a hang into a failure, never a timing
/// assertion (the figures live in scripts/bench-hostile.sh).
const HANG_GUARD: Duration = Duration::from_secs(240);

struct Out {
    code: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}):\n{}\n{}",
                String::from_utf8_lossy(&self.stdout),
                String::from_utf8_lossy(&self.stderr)
            )
        })
    }

    fn all(&self) -> Vec<u8> {
        [self.stdout.as_slice(), self.stderr.as_slice()].concat()
    }
}

/// Run `tenancy` in `cwd` with a compile cache of its own, killing it past the hang guard.
fn run(cwd: &Path, cache: &Path, args: &[&str]) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env("TENANCY_CACHE_DIR", cache)
        .env_remove("TENANCY_REPO")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tenancy");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > HANG_GUARD {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tenancy {args:?} did not end within {HANG_GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out.join().expect("stdout"),
        stderr: err.join().expect("stderr"),
    }
}

fn sha(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("read")))
}

const STANDARD: [&str; 4] = ["residency", "encryption", "quotas", "lifecycle"];

/// A copy of the standard bundle in `dir`, plus a policy named `hostile` whose module,
/// `dir/hostile.wasm`, is `case`: a module of tests/data/policies/hostile, or `pipe` (a named
/// pipe) or `dev-zero` (a link to /dev/zero). `mode` is the hostile policy's mode.
fn bundle_with(dir: &Path, case: &str, mode: &str) -> PathBuf {
    let policies = workspace_root().join("policies");
    for p in STANDARD {
        std::fs::create_dir_all(dir.join(p)).expect("mkdir");
        std::fs::copy(
            policies.join(format!("{p}/{p}.wasm")),
            dir.join(format!("{p}/{p}.wasm")),
        )
        .expect("copy");
    }
    let module = dir.join("hostile.wasm");
    let digest = match case {
        "pipe" => {
            let made = Command::new("mkfifo")
                .arg(&module)
                .status()
                .expect("mkfifo");
            assert!(made.success());
            "0".repeat(64)
        }
        "dev-zero" => {
            std::os::unix::fs::symlink("/dev/zero", &module).expect("symlink");
            "0".repeat(64)
        }
        _ => {
            std::fs::copy(
                workspace_root().join(format!("tests/data/policies/hostile/{case}.wasm")),
                &module,
            )
            .expect("copy");
            sha(&module)
        }
    };
    let mut bundle = std::fs::read_to_string(policies.join("bundle.yaml")).expect("bundle");
    bundle.push_str(&format!(
        "  - name: hostile\n    module: hostile.wasm\n    sha256: \"{digest}\"\n    mode: {mode}\n"
    ));
    std::fs::write(dir.join("bundle.yaml"), bundle).expect("write");
    dir.join("bundle.yaml")
}

/// The example tenants, with t_5001 over its plan's job ceiling: the quotas policy must
/// still say so whatever the hostile module does.
fn repo_with_a_quota_breach() -> TestRepo {
    let repo = TestRepo::with_examples();
    repo.edit(
        "org_acme/t_5001.yaml",
        "concurrentJobs: 10",
        "concurrentJobs: 99",
    );
    repo.commit("t_5001 over its plan");
    repo
}

/// `tenancy policy run hostile.wasm` (in `dir`) on the example tenant t_5001 of `repo`.
fn policy_run(dir: &Path, cache: &Path, repo: &Path, extra: &[&str]) -> Out {
    let tenant = repo.join("org_acme/t_5001.yaml");
    let platform = repo.join("platform");
    let mut args = vec![
        "policy",
        "run",
        "hostile.wasm",
        "--tenant",
        tenant.to_str().expect("utf-8"),
        "--platform",
        platform.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    run(dir, cache, &args)
}

struct Case {
    module: &'static str,
    /// `reason` in `policy inspect --output json`.
    class: &'static str,
    /// What the refusal says.
    says: &'static str,
    /// Refused when loaded (validate's `policies[].error`, `inspect`), or only when it
    /// evaluates (`policy run`).
    at_load: bool,
}

const CASES: &[Case] = &[
    Case {
        module: "pipe",
        class: "read",
        says: "not a regular file",
        at_load: true,
    },
    Case {
        module: "dev-zero",
        class: "read",
        says: "not a regular file",
        at_load: true,
    },
    Case {
        module: "function-flood",
        class: "shape",
        says: "250003 functions, more than the sandbox's 50000",
        at_load: true,
    },
    Case {
        module: "liveness-bomb",
        class: "compile-budget",
        says: "exceeded its compile budget",
        at_load: true,
    },
    Case {
        module: "two-memories",
        class: "memory",
        says: "memory limit (64 MiB, all its memories and tables together)",
        at_load: true,
    },
    Case {
        module: "contract-future",
        class: "version",
        says: "built for tenancy:policy@9.0.0; this host serves tenancy:policy@0.1.0, tenancy:policy@0.2.0",
        at_load: true,
    },
    Case {
        module: "forged-info",
        class: "malformed",
        says: r#"info() name "hostile\u{1b}[2J\u{1b}[Hok\u{0}""#,
        at_load: true,
    },
    Case {
        module: "violation-flood",
        class: "output",
        says: "more than its output limits allow (100 violations, 262144 bytes)",
        at_load: false,
    },
    // Contract 0.2.0's platform lookups: an oversized argument, and lookups without end.
    Case {
        module: "lookup-flood",
        class: "lookup",
        says: "bytes in one platform lookup",
        at_load: false,
    },
    Case {
        module: "lookup-loop",
        class: "fuel",
        says: "exceeded its fuel limit (50000000 units)",
        at_load: false,
    },
    Case {
        module: "bad-pointer",
        class: "malformed",
        says: r#"path "spec/regions" is not an RFC 6901 JSON pointer"#,
        at_load: false,
    },
];

#[test]
fn every_hostile_module_is_refused_with_its_reason_while_the_others_judge_every_tenant() {
    let repo = repo_with_a_quota_breach();
    let cache = tempfile::tempdir().expect("cache");
    let repo_arg = repo.path().to_str().expect("utf-8").to_owned();
    for case in CASES {
        let dir = tempfile::tempdir().expect("tmp");
        let bundle = bundle_with(dir.path(), case.module, "enforce");
        let b = bundle.to_str().expect("utf-8");
        let out = run(
            dir.path(),
            cache.path(),
            &[
                "validate",
                "--repo",
                &repo_arg,
                "--policies",
                b,
                "--output",
                "json",
            ],
        );
        let m = case.module;
        assert_eq!(out.code, 1, "{m}: {}", String::from_utf8_lossy(&out.stderr));
        let report = out.json();
        let findings = report["findings"].as_array().expect("findings");
        // The hostile policy denies every tenant, naming itself and why.
        let failed: Vec<&Value> = findings
            .iter()
            .filter(|f| f["rule"] == "policy.failed")
            .collect();
        let tenants: std::collections::BTreeSet<&str> = failed
            .iter()
            .map(|f| f["tenant"].as_str().expect("tenant"))
            .collect();
        assert_eq!(
            tenants.len() as u64,
            report["summary"]["tenants"].as_u64().expect("count"),
            "{m}: every tenant is denied by the hostile policy: {failed:#?}"
        );
        let mut reason = String::new();
        for f in &failed {
            let message = f["message"].as_str().expect("message");
            assert!(
                message.starts_with("policy `hostile` (hostile.wasm) could not decide: "),
                "{m}: only the hostile policy fails: {message}"
            );
            assert!(message.contains(case.says), "{m}: {message}");
            assert_eq!(f["severity"], "error");
            reason = message
                .trim_start_matches("policy `hostile` (hostile.wasm) could not decide: ")
                .to_owned();
        }
        // The standard policies loaded and judged: t_5001's breach is reported.
        for p in report["policies"].as_array().expect("policies") {
            if p["name"] == "hostile" {
                assert_eq!(p["error"].is_string(), case.at_load, "{m}: {p}");
                if case.at_load {
                    assert_eq!(p["error"].as_str(), Some(reason.as_str()), "{m}");
                }
            } else {
                assert!(p["error"].is_null(), "{m}: {p}");
            }
        }
        assert!(
            findings
                .iter()
                .any(|f| f["rule"] == "quotas.over-plan" && f["tenant"] == "t_5001"),
            "{m}: the quotas policy still judged t_5001: {findings:#?}"
        );
        // `policy inspect` refuses a module validate refuses at load, for the same reason;
        // `policy run` refuses one that fails when it runs, for the same reason.
        let refusal = if case.at_load {
            let out = run(
                dir.path(),
                cache.path(),
                &["policy", "inspect", "hostile.wasm", "--output", "json"],
            );
            assert_eq!(out.code, 1, "{m}");
            let json = out.json();
            assert_eq!(json["accepted"], false, "{m}");
            assert_eq!(json["reason"], case.class, "{m}: {json:#}");
            json["error"].as_str().expect("error").to_owned()
        } else {
            let out = policy_run(dir.path(), cache.path(), repo.path(), &["--output", "json"]);
            assert_eq!(out.code, 1, "{m}");
            let json = out.json();
            assert_eq!(json["allowed"], false, "{m}");
            json["error"].as_str().expect("error").to_owned()
        };
        assert_eq!(refusal, reason, "{m}: the same reason everywhere");
    }
}

/// Every byte that could drive a terminal: ESC, CR, BEL, NUL and the bidirectional override.
fn assert_inert(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for (bad, name) in [
        ('\u{1b}', "ESC"),
        ('\r', "CR"),
        ('\u{7}', "BEL"),
        ('\0', "NUL"),
        ('\u{202e}', "RLO"),
    ] {
        assert!(
            !text.contains(bad),
            "{what}: a raw {name} reached the output:\n{text}"
        );
    }
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("ok: 0 error(s)")),
        "{what}: a module printed a line of its own:\n{text}"
    );
}

#[test]
fn what_a_module_says_cannot_drive_the_terminal_or_format_a_comment() {
    let repo = TestRepo::with_examples();
    let dir = tempfile::tempdir().expect("tmp");
    let cache = tempfile::tempdir().expect("cache");
    let bundle = bundle_with(dir.path(), "forged-output", "enforce");
    let b = bundle.to_str().expect("utf-8");
    let r = repo.path().to_str().expect("utf-8");
    let config = crate::support::embedded_config(dir.path());
    let c = config.to_str().expect("utf-8");

    let validate = run(
        dir.path(),
        cache.path(),
        &["validate", "--repo", r, "--policies", b],
    );
    assert_eq!(validate.code, 1);
    assert_inert("validate", &validate.all());
    let text = String::from_utf8_lossy(&validate.stdout);
    assert!(
        text.contains(r"\u{1b}[2J\u{1b}[H\u{d}ok: 0 error(s)"),
        "{text}"
    );
    assert!(text.contains(r"fine\nok: 0 error(s)"), "{text}");

    // With colours, the only escapes are our own colour codes.
    let coloured = run(
        dir.path(),
        cache.path(),
        &[
            "validate",
            "--repo",
            r,
            "--policies",
            b,
            "--color",
            "always",
        ],
    );
    let text = String::from_utf8_lossy(&coloured.stdout).into_owned();
    assert!(text.contains('\u{1b}'), "colours are on");
    for (i, _) in text.match_indices('\u{1b}') {
        let rest = &text[i + 1..];
        let code: String = rest
            .chars()
            .skip(1)
            .take_while(|c| c.is_ascii_digit() || *c == ';')
            .collect();
        assert!(
            rest.starts_with('[') && rest[1 + code.len()..].starts_with('m'),
            "an escape that is not a colour: {:?}",
            &rest[..rest.len().min(12)]
        );
    }

    for args in [
        vec!["plan", "--repo", r, "--config", c, "--policies", b],
        vec![
            "apply",
            "--yes",
            "--repo",
            r,
            "--config",
            c,
            "--policies",
            b,
        ],
    ] {
        let out = run(dir.path(), cache.path(), &args);
        assert_ne!(out.code, 0, "{args:?}: the forged denies block");
        assert_inert(args[0], &out.all());
    }
    let notes = Command::new("git")
        .args(["notes", "list"])
        .current_dir(repo.path())
        .output()
        .expect("git");
    for line in String::from_utf8_lossy(&notes.stdout).lines() {
        let object = line.split_whitespace().nth(1).expect("object");
        let note = Command::new("git")
            .args(["notes", "show", object])
            .current_dir(repo.path())
            .output()
            .expect("git");
        assert_inert("notes", &note.stdout);
    }

    let markdown = run(
        dir.path(),
        cache.path(),
        &[
            "plan",
            "--repo",
            r,
            "--config",
            c,
            "--policies",
            b,
            "--output",
            "markdown",
        ],
    );
    let md = String::from_utf8_lossy(&markdown.stdout);
    assert_inert("markdown", &markdown.stdout);
    assert!(
        md.contains("&lt;img src=x onerror=alert\\(1\\)&gt;"),
        "{md}"
    );
    assert!(
        !md.contains("<img") && !md.contains("</details> **"),
        "{md}"
    );
    assert!(
        md.contains(r"\*\*\[ok\]\(javascript:alert\(1\)\)\*\*"),
        "{md}"
    );
    assert!(md.contains("U+202Egnp.exe"), "{md}");

    // What a module says of itself, and what it returns to `policy run`.
    let inspect = run(
        dir.path(),
        cache.path(),
        &[
            "policy",
            "inspect",
            workspace_root()
                .join("tests/data/policies/hostile/forged-info.wasm")
                .to_str()
                .expect("utf-8"),
        ],
    );
    assert_eq!(inspect.code, 1);
    assert_inert("inspect", &inspect.all());
    let policy_run = policy_run(dir.path(), cache.path(), repo.path(), &[]);
    assert_eq!(policy_run.code, 1);
    assert_inert("policy run", &policy_run.all());
}

#[test]
fn a_cached_compilation_is_judged_by_the_budget_of_the_run_that_uses_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = tempfile::tempdir().expect("cache");
    let module = workspace_root().join("policies/residency/residency.wasm");
    let m = module.to_str().expect("utf-8");
    let inspect = |extra: &[&str]| {
        let mut args = vec!["policy", "inspect", m, "--output", "json"];
        args.extend_from_slice(extra);
        run(dir.path(), cache.path(), &args).json()
    };
    let first = inspect(&[]);
    assert_eq!(first["accepted"], true, "{first:#}");
    assert_eq!(first["compile"]["cached"], false);
    let cpu = first["compile"]["cpuMs"].as_u64().expect("cpu");
    assert!(cpu > 0);
    let again = inspect(&[]);
    assert_eq!(again["compile"]["cached"], true, "{again:#}");
    assert_eq!(again["compile"]["cpuMs"].as_u64(), Some(cpu));
    // A budget below what it cost: refused, cache or not.
    let tight = (cpu / 2).max(1).to_string();
    let refused = inspect(&["--compile-ms", &tight]);
    assert_eq!(refused["accepted"], false, "{refused:#}");
    assert_eq!(refused["reason"], "compile-budget");
    let error = refused["error"].as_str().expect("error");
    assert!(
        error.contains("as measured when it was compiled and cached"),
        "{error}"
    );

    // A bomb never reaches the cache: refused again, at full cost, every time.
    let bomb = workspace_root().join("tests/data/policies/hostile/liveness-bomb.wasm");
    let digest = sha(&bomb);
    for _ in 0..2 {
        let out = run(
            dir.path(),
            cache.path(),
            &[
                "policy",
                "inspect",
                bomb.to_str().expect("utf-8"),
                "--output",
                "json",
            ],
        );
        let json = out.json();
        assert_eq!(json["reason"], "compile-budget", "{json:#}");
        assert!(
            !json["error"]
                .as_str()
                .unwrap_or_default()
                .contains("cached"),
            "{json:#}"
        );
    }
    let cached: Vec<String> = std::fs::read_dir(cache.path().join("policies"))
        .expect("cache dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!cached.iter().any(|f| f.starts_with(&digest)), "{cached:?}");
}

#[test]
fn a_daemon_sized_host_judges_a_cached_module_by_each_bundles_budget() {
    use tenancy::policy::bundle::Limits;
    use tenancy::policy::host::Failure;
    let host = crate::support::policy_host();
    let bytes =
        std::fs::read(workspace_root().join("policies/residency/residency.wasm")).expect("read");
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let loaded = host.load_bytes(&bytes, &digest).expect("loads");
    assert!(loaded.cost.cpu_ms > 0);
    // The same module, already compiled in this process, under a bundle with a budget below
    // what compiling it cost.
    let tight = Limits {
        compile_ms: loaded.cost.cpu_ms / 2,
        ..Limits::default()
    };
    let err = host
        .load_with(&bytes, &digest, &tight)
        .err()
        .expect("refused");
    assert!(matches!(err, Failure::CompileBudget(_)), "{err:?}");
}

/// 100 violations of 2.6 KB each are within every per-evaluation limit; 400 tenants of them
/// are 104 MB. A run keeps at most its output budget, however many threads copy it, and a
/// tenant whose violations were cut is still denied.
#[test]
fn a_run_keeps_a_bounded_output_and_a_cut_deny_still_denies() {
    use tenancy::policy::{Change, OUTPUT_CUT, PolicySet, host::RUN_OUTPUT_BYTES};
    let dir = tempfile::tempdir().expect("tmp");
    let bundle = bundle_with(dir.path(), "output-at-limit", "enforce");
    let bundle = tenancy::policy::bundle::Bundle::load(&bundle).expect("bundle");
    let set = PolicySet::load(std::sync::Arc::new(crate::support::policy_host()), &bundle);
    let catalog = crate::support::example_catalog();
    let platform = tenancy::policy::platform_of(&catalog);
    let tenant = &catalog.tenants[0].value;
    let changes: Vec<Change<'_>> = (0..400)
        .map(|_| Change {
            tenant,
            previous: None,
            commit_sha: "0000000000000000000000000000000000000000",
            commit_author: "Test <t@test>",
        })
        .collect();
    let all = set.evaluate_all(&changes, &platform);
    let mut kept = 0usize;
    let mut cut = 0usize;
    for decisions in &all {
        let hostile = decisions
            .iter()
            .find(|d| d.policy == "hostile")
            .expect("judged");
        assert!(
            hostile.blocks(),
            "a deny still denies: {:?}",
            hostile.failure
        );
        kept += hostile
            .verdicts
            .iter()
            .map(|v| v.rule.len() + v.message.len() + v.path.len())
            .sum::<usize>();
        if hostile.verdicts.iter().any(|v| v.rule == OUTPUT_CUT) {
            cut += 1;
        }
    }
    assert!(cut > 0, "104 MB of output passed the run's budget");
    // The budget, plus at most one short verdict and the note for each cut evaluation.
    assert!(
        kept as u64 <= RUN_OUTPUT_BYTES + cut as u64 * 4096,
        "kept {kept} bytes"
    );
}

/// Every file a command reads by path is read the way a module is: a named pipe given as the
/// bundle (or as a fixture) is refused, never waited for.
#[test]
fn a_pipe_in_place_of_a_bundle_or_a_fixture_is_refused_not_waited_for() {
    let repo = TestRepo::with_examples();
    let dir = tempfile::tempdir().expect("tmp");
    let cache = tempfile::tempdir().expect("cache");
    let pipe = dir.path().join("bundle.yaml");
    let made = Command::new("mkfifo").arg(&pipe).status().expect("mkfifo");
    assert!(made.success());
    let p = pipe.to_str().expect("utf-8");
    let r = repo.path().to_str().expect("utf-8");
    for args in [
        vec!["validate", "--repo", r, "--policies", p],
        vec!["policy", "test", "--bundle", p],
    ] {
        let out = run(dir.path(), cache.path(), &args);
        assert_eq!(out.code, 2, "{args:?}");
        let err = one_spaced(&out.stderr);
        assert!(err.contains("not a regular file"), "{args:?}: {err}");
    }
    let bundle = workspace_root().join("policies/bundle.yaml");
    let out = run(
        dir.path(),
        cache.path(),
        &[
            "policy",
            "test",
            "--bundle",
            bundle.to_str().expect("utf-8"),
            p,
        ],
    );
    assert_eq!(out.code, 2);
    let err = one_spaced(&out.stderr);
    assert!(err.contains("not a regular file"), "{err}");
}

/// An error report with miette's line wrapping and box drawing taken out.
fn one_spaced(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .split(|c: char| c.is_whitespace() || "│╰─▶×".contains(c))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
