//! The source stage through the library API: tree diffs between revisions.

use crate::support::TestRepo;
use tenancy::source::{ChangeKind, ChangedPath, ReadOptions, changed_paths};

#[test]
fn tree_diff_lists_changed_manifests_only() {
    let repo = TestRepo::with_examples();
    let base = repo.commit("base (no changes)");
    let t5001 = std::fs::read_to_string(repo.path().join("org_acme/t_5001.yaml")).expect("read");
    repo.write(
        "org_acme/t_5001.yaml",
        t5001.replace("lifecycle: Active", "lifecycle: Suspended"),
    );
    repo.write("org_acme/t_5005.yaml", t5001.replace("t_5001", "t_5005"));
    repo.remove("org_globex/t_6003.yaml");
    repo.write("README.md", "not a manifest\n");
    repo.write(".github/workflows/ci.yaml", "ignored: hidden directory\n");
    let head = repo.commit("suspend t_5001, add t_5005, drop t_6003");

    let mut changes =
        changed_paths(repo.path(), &base, &head, &ReadOptions::default()).expect("diff");
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    let expected = vec![
        ChangedPath {
            path: "org_acme/t_5001.yaml".into(),
            change: ChangeKind::Modified,
        },
        ChangedPath {
            path: "org_acme/t_5005.yaml".into(),
            change: ChangeKind::Added,
        },
        ChangedPath {
            path: "org_globex/t_6003.yaml".into(),
            change: ChangeKind::Deleted,
        },
    ];
    assert_eq!(changes, expected);

    // Restricted to a sub-directory.
    let opts = ReadOptions {
        path: "org_globex".into(),
        ..ReadOptions::default()
    };
    let changes = changed_paths(repo.path(), &base, &head, &opts).expect("diff");
    assert_eq!(
        changes,
        vec![ChangedPath {
            path: "org_globex/t_6003.yaml".into(),
            change: ChangeKind::Deleted
        }]
    );

    // Unknown revisions are errors, not empty diffs.
    assert!(changed_paths(repo.path(), "nope", &head, &ReadOptions::default()).is_err());
}

#[test]
fn snapshot_carries_the_commit_and_its_author() {
    let repo = TestRepo::with_examples();
    let sha = repo.commit("second");
    let snap =
        tenancy::source::read_revision(repo.path(), "HEAD", &ReadOptions::default()).expect("read");
    let commit = snap.commit.expect("commit info");
    assert_eq!(commit.sha, sha);
    assert_eq!(commit.author_email, "author@tenancy.test");
    assert_eq!(commit.summary, "second");
    assert_eq!(
        snap.files.len(),
        18,
        "3 organizations, 13 tenants, regions.yaml, plans.yaml"
    );
}
