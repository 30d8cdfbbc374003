//! B3. Every commit that any tenant's outcome names gets its git note, even when the pass that
//! recorded it was killed before writing it: notes are rendered from the state store.

use super::{apply, bundle};
use crate::support::tenancy;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_pass_killed_after_recording_tenants_still_gets_its_note() {
    let repo = crate::support::generated_repo(400, &["--seed", "5", "--uniform"]);
    let first = repo.head();
    let work = tempfile::tempdir().expect("tmp");
    let config = work.path().join("tenancy.toml");
    // One tenant at a time, so the kill lands in the middle of the pass.
    std::fs::write(
        &config,
        format!(
            "[embedded]\nroot = \"{}\"\n[apply]\nconcurrency = 1\n",
            work.path().join("data").display()
        ),
    )
    .expect("config");
    let cfg = config.to_str().expect("utf-8");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .args([
            "apply",
            "--yes",
            "--repo",
            repo.path().to_str().expect("utf-8"),
        ])
        .args(["--config", cfg, "--policies", &bundle(), "--output", "json"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.path().join("apply.err")).expect("stderr file"))
        .spawn()
        .expect("apply");
    let started = Instant::now();
    // Kill it once some tenants' outcomes (and their events) are recorded at the first commit.
    loop {
        let events = tenancy(&["events", "--config", cfg, "--output", "json"]);
        if events.stdout.lines().count() > 0 {
            break;
        }
        // Reading the store while the apply creates it must not break either of them.
        assert!(
            events.code == 0 || events.stderr.contains("no state store"),
            "`events` failed beside the apply: {}",
            events.stderr
        );
        let stderr = || std::fs::read_to_string(work.path().join("apply.err")).unwrap_or_default();
        if let Some(status) = child.try_wait().expect("wait") {
            panic!(
                "the apply ended ({status}) before recording anything: {}",
                stderr()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing recorded in 60 s; `events` said: {}; the apply: {}",
            events.stderr,
            stderr()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the kill must land mid-pass (the apply already finished)"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(
        tenancy::source::read_note(repo.path(), &first)
            .expect("note")
            .is_none(),
        "killed before writing the note"
    );

    // A later head: the resumed pass records it, and the first commit gets its note too.
    std::fs::write(repo.path().join("README.md"), "tenants\n").expect("write");
    let second = repo.commit("a later head");
    let (run, _) = apply(&repo, &config, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for sha in [&first, &second] {
        let note = tenancy::source::read_note(repo.path(), sha)
            .expect("note")
            .unwrap_or_else(|| {
                panic!(
                    "commit {sha} has no note (first {first}, second {second}): {}",
                    run.stdout
                )
            });
        assert!(
            note.starts_with(tenancy::reconcile::notes::NOTE_MARK),
            "{note}"
        );
        assert!(note.contains(" applied: "), "{note}");
    }
    // Every commit an event names is annotated.
    let events = tenancy(&["events", "--config", cfg, "--output", "json"]);
    for line in events.stdout.lines() {
        let e: serde_json::Value = serde_json::from_str(line).expect("event");
        let sha = e["commitsha"].as_str().expect("commitsha");
        let tenant = e["tenantid"].as_str().expect("tenant");
        let note = tenancy::source::read_note(repo.path(), sha)
            .expect("note")
            .unwrap_or_else(|| panic!("{sha}, named by an event of {tenant}, has no note"));
        assert!(
            note.contains(&format!("\n{tenant} ")),
            "{tenant} in the note of {sha}"
        );
    }
}
