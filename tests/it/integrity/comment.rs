//! F. A pull-request comment that GitHub accepts: under 65,000 characters however many tenants
//! a change touches, the blocked ones always listed, the rest cut with a count and a pointer to
//! the full JSON plan.

use super::{bundle, json_run};
use crate::support::{TestRepo, embedded_config, tenancy};

fn markdown(repo: &TestRepo, config: &std::path::Path, base: &str) -> crate::support::Run {
    let b = bundle();
    tenancy(&[
        "plan",
        "--repo",
        repo.path().to_str().expect("utf-8"),
        "--config",
        config.to_str().expect("utf-8"),
        "--policies",
        &b,
        "--base",
        base,
        "--head",
        "HEAD",
        "--output",
        "markdown",
    ])
}

#[test]
fn a_plan_comment_fits_github_whatever_the_change() {
    // 300 new tenants in one pull request (the base has the platform only).
    let repo = crate::support::generated_repo(300, &["--seed", "3"]);
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    // A base without the tenants: the whole repository is the pull request.
    let head = repo.head();
    let files: Vec<std::path::PathBuf> = walk(repo.path());
    let texts: Vec<(std::path::PathBuf, String)> = files
        .iter()
        .map(|p| (p.clone(), std::fs::read_to_string(p).expect("read")))
        .collect();
    for (p, _) in &texts {
        std::fs::remove_file(p).expect("rm");
    }
    std::fs::write(repo.path().join("README.md"), "tenants\n").expect("write");
    let empty = repo.commit("no tenants yet");
    for (p, t) in &texts {
        std::fs::write(p, t).expect("write");
    }
    // One tenant refused by policy: it must be listed, whatever else is cut.
    let victim = texts
        .iter()
        .find(|(_, t)| t.contains("preferred: ap-south-1") && t.contains("lifecycle: Active"))
        .map(|(p, _)| p.clone())
        .expect("a tenant in ap-south-1");
    let text = std::fs::read_to_string(&victim).expect("read");
    std::fs::write(
        &victim,
        text.replace("preferred: ap-south-1", "preferred: us-east-1")
            .replace("allowed: [ap-south-1]", "allowed: [ap-south-1, us-east-1]"),
    )
    .expect("write");
    repo.commit("300 tenants, one out of its residency zone");
    let _ = head;
    let victim_id = victim
        .file_stem()
        .expect("stem")
        .to_string_lossy()
        .into_owned();

    let run = markdown(&repo, &config, &empty);
    assert_eq!(
        run.code, 1,
        "the refused tenant refuses the plan: {}",
        run.stderr
    );
    let chars = run.stdout.chars().count();
    assert!(chars <= 65_000, "{chars} characters");
    assert!(
        run.stdout.starts_with("### Tenancy plan for"),
        "the summary first"
    );
    let blocked = run.stdout.find("#### Blocked").expect("a blocked section");
    assert!(
        run.stdout[blocked..].contains(&format!("`{victim_id}`")),
        "the refused tenant is listed"
    );
    assert!(
        run.stdout.contains("Cut to fit a comment:")
            && run.stdout.contains("more tenant(s) with changes")
            && run.stdout.contains("--output json"),
        "{}",
        &run.stdout[run.stdout.len().saturating_sub(600)..]
    );

    // A platform change replans every tenant: still within the limit.
    let plans = repo.path().join("platform/plans.yaml");
    let text = std::fs::read_to_string(&plans).expect("plans");
    std::fs::write(&plans, format!("{text}\n# reviewed\n")).expect("write");
    let before = repo.head();
    repo.commit("touch the plans");
    let run = markdown(&repo, &config, &before);
    assert!(run.stdout.chars().count() <= 65_000);
    // And the JSON plan has everything the comment cut.
    let full = json_run(
        "plan",
        &repo,
        &config,
        &["--base", &empty, "--head", "HEAD"],
    );
    let tenants = full.json()["tenants"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(tenants, 300, "{}", full.stderr);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read").flatten() {
        let p = e.path();
        if e.file_name() == ".git" || e.file_name() == "platform" {
            continue;
        }
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "yaml")
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("t_"))
        {
            out.push(p);
        }
    }
    out
}
