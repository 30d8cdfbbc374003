//! How every write lands: preconditions (`If-Match`), one commit at a time, judged like a pull request, then a job queued.

use super::*;

/// `If-Match` must name the version the caller saw (its ETag), when given; a tenant with no
/// applied version yet matches only `*`. The reason it does not, if it does not.
pub(super) fn check_if_match(
    headers: &HeaderMap,
    id: &str,
    t: Option<&TenantRecord>,
) -> Result<(), String> {
    let Some(want) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    if want.trim() == "*" {
        return Ok(());
    }
    match t {
        Some(t) if want.trim() == format!("\"{}\"", t.version) => Ok(()),
        Some(t) => Err(format!(
            "tenant `{id}` is at version {} (ETag \"{}\"), not {want}",
            t.version, t.version
        )),
        None => Err(format!(
            "tenant `{id}` has no applied version yet, so no ETag matches {want}"
        )),
    }
}

pub(super) fn request_id_of(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A committed write: its commit and the job that will converge it (none when the change
/// needs no job, e.g. a quota change).
pub(super) struct Committed {
    pub(super) sha: String,
    pub(super) job_id: Option<String>,
}

/// Commit `edit` of tenant `id` (judged first: a refusal is 422 with the findings and nothing
/// is committed), then queue the job `job_action` that will converge it, so it can be polled
/// at once. `summary` is the commit's subject.
/// One API write: the tenant, the commit's subject, why (a `Reason:` trailer), the job that
/// will converge it, and the edit.
pub(super) struct Write<'a> {
    pub(super) id: &'a str,
    /// Whether the request's `If-Match` applies (a change to an existing tenant).
    pub(super) if_match: bool,
    pub(super) summary: String,
    pub(super) reason: Option<&'a str>,
    pub(super) job_action: Option<&'a str>,
    pub(super) edit: Box<writes::Edit>,
}

pub(super) async fn commit_write(
    api: &Arc<Api>,
    caller: &Caller,
    headers: &HeaderMap,
    w: Write<'_>,
) -> Result<Committed, Problem> {
    let Write {
        id,
        if_match,
        summary,
        reason,
        job_action,
        edit,
    } = w;
    let target = api.writes.clone();
    // Trailers: who asked, the request (the correlation id of what the daemon then does),
    // the tenant, and why (it travels on the tenant's events).
    let mut message = format!(
        "{summary}\n\nRequested-By: {}\nRequest-Id: {}\nTenant: {id}\n",
        caller.name,
        request_id_of(headers)
    );
    if let Some(r) = reason.filter(|r| !r.is_empty()) {
        message += &format!("Reason: {r}\n");
    }
    let (tenant, author) = (id.to_owned(), caller.name.clone());
    // One write at a time: concurrent writers queue here instead of racing on the branch.
    let _turn = api.write_lock.lock().await;
    // Judged as the daemon will judge it: against the tenant's last applied manifest.
    let applied = crate::reconcile::applied_baseline_of(&api.store, [id]).await?;
    // The precondition as it stands now, under the write lock; told only if the change itself
    // is valid.
    let precondition = if if_match {
        let record = api.store.tenant(id).await?;
        check_if_match(headers, id, record.as_ref()).err()
    } else {
        None
    };
    let committed = tokio::task::spawn_blocking(move || {
        writes::commit(
            &target,
            &tenant,
            &author,
            &message,
            &*edit,
            Some(applied),
            precondition,
        )
    })
    .await?;
    let sha = committed.map_err(|e| write_problem(id, caller, e))?;
    let job_id = match job_action {
        Some(action) => {
            let job = crate::store::NewJob {
                tenant_id: id.to_owned(),
                commit_sha: sha.clone(),
                action: action.to_owned(),
                steps: Vec::new(),
            };
            api.store
                .queue_jobs(&sha, &[], std::slice::from_ref(&job), |_| false)
                .await?;
            Some(job.id())
        }
        None => None,
    };
    Ok(Committed { sha, job_id })
}

/// What a write that could not be made answers. Findings about anything outside a confined
/// caller's scope are not shown as they are: another tenant's id, file or values are never
/// told to a caller that could not read them (a uniqueness conflict says only that the value
/// is taken).
pub(super) fn write_problem(id: &str, caller: &Caller, e: writes::WriteError) -> Problem {
    use writes::WriteError as W;
    match e {
        W::Refused(file, findings) => {
            let mut p = Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "refused",
                format!(
                    "the change to `{id}` was refused by validation or policy; nothing was committed"
                ),
            );
            for f in findings {
                let own = f.tenant.as_deref().map_or(f.file == file, |t| t == id);
                let (field, message) = if caller.unconfined() {
                    (
                        f.pointer.clone().unwrap_or_else(|| f.location()),
                        format!("{}: {} ({})", f.rule, f.message, f.location()),
                    )
                } else if !own {
                    (
                        "body".to_owned(),
                        format!(
                            "{}: the change conflicts with a manifest outside this token's scope",
                            f.rule
                        ),
                    )
                } else if f.rule.starts_with("unique.") {
                    let field = f.pointer.clone().unwrap_or_else(|| "body".into());
                    let message = format!(
                        "{}: `{field}` is already used by another tenant ({})",
                        f.rule,
                        f.location()
                    );
                    (field, message)
                } else {
                    (
                        f.pointer.clone().unwrap_or_else(|| f.location()),
                        format!("{}: {} ({})", f.rule, f.message, f.location()),
                    )
                };
                p = p.field(&field, message);
            }
            p
        }
        W::Invalid(field, why) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            why.clone(),
        )
        .field(&field, why),
        W::Unchanged(why) => Problem::new(StatusCode::CONFLICT, "unchanged", why),
        W::Precondition(why) => Problem::new(StatusCode::CONFLICT, "not-closed", why),
        W::IfMatch(why) => {
            Problem::new(StatusCode::PRECONDITION_FAILED, "precondition-failed", why)
        }
        W::Exists(why) => Problem::new(StatusCode::CONFLICT, "exists", why),
        W::NotEditable(why) => Problem::new(StatusCode::CONFLICT, "not-editable", why),
        W::NoManifest(why) => Problem::not_found(&why),
        W::Race => Problem::new(
            StatusCode::CONFLICT,
            "race",
            "the branch kept moving; retry",
        ),
        W::Diverged(why) => Problem::new(StatusCode::CONFLICT, "diverged", why),
        W::Git(e) => {
            tracing::error!(error = %e, tenant = id, "API write: repository");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "repository",
                format!(
                    "the repository could not be read or written: {e}; nothing was committed, retry later"
                ),
            )
        }
    }
}

/// A tenant the caller may write, as the branch head declares it — a write judges its
/// preconditions against what is committed, applied yet or not (the API reads its own
/// writes) — with its applied record when it has one (for `If-Match`); "not found" outside the
/// caller's scope; charged to the tenant's rate limit once known to be the caller's.
pub(super) async fn writable(
    api: &Arc<Api>,
    caller: &Caller,
    id: &str,
) -> Result<(writes::CommittedTenant, Option<TenantRecord>), Problem> {
    tenant_id(id)?;
    let (target, tenant) = (api.writes.clone(), id.to_owned());
    let committed = tokio::task::spawn_blocking(move || writes::committed(&target, &tenant))
        .await?
        .map_err(|e| write_problem(id, caller, e))?;
    let Some(c) = committed.filter(|c| caller.sees_ids(id, &c.organization)) else {
        return Err(Problem::not_found(&format!("tenant `{id}`")));
    };
    charge_tenant(api, id)?;
    let record = api.store.tenant(id).await?;
    Ok((c, record))
}

/// Commit `t`'s move to lifecycle `to` and answer 202 with the job and the commit.
/// What a lifecycle write is: the action (its commit's subject), the state it moves to, the
/// committed states it may start from (any when empty), and why (a `Reason:` trailer).
pub(super) struct Transition<'a> {
    pub(super) action: &'a str,
    pub(super) to: Lifecycle,
    pub(super) from: &'static [Lifecycle],
    pub(super) reason: Option<&'a str>,
}

pub(super) async fn commit_and_queue(
    api: &Arc<Api>,
    caller: &Caller,
    headers: &HeaderMap,
    id: &str,
    tr: Transition<'_>,
) -> Result<Response, Problem> {
    let Transition {
        action,
        to,
        from,
        reason,
    } = tr;
    let (committed, _) = writable(api, caller, id).await?;
    let id = id.to_owned();
    let edit = writes::lifecycle(id.clone(), to, reason.unwrap_or_default().to_owned(), from);
    let note = reason.map(|r| format!(" ({r})")).unwrap_or_default();
    let job_action = crate::reconcile::transition_action(committed.lifecycle, to);
    let c = commit_write(
        api,
        caller,
        headers,
        Write {
            id: &id,
            if_match: true,
            summary: format!("{action} {id} via the API{note}"),
            reason,
            job_action: Some(job_action),
            edit,
        },
    )
    .await?;
    let job_id = c.job_id.unwrap_or_default();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(views::Accepted {
            links: views::JobLinks {
                self_: format!("{BASE}/jobs/{job_id}"),
                tenant: format!("{BASE}/tenants/{id}"),
            },
            job_id,
            state: "Queued".into(),
            commit_sha: c.sha,
        }),
    )
        .into_response())
}
