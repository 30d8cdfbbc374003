//! `GET /jobs/{id}`: the job that converges a change, with its steps.

use super::*;

#[utoipa::path(get, path = "/api/tenancy/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "Job id", pattern = "^[A-Za-z0-9_]{1,64}$")), responses((status = 200, description = "The job: state (Queued, Running, Completed, Failed), progress, steps, updatedAt", body = views::JobView), (status = 400, description = "Not a job id", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such job in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn get_job(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(
            Problem::new(StatusCode::BAD_REQUEST, "invalid-id", "not a job id")
                .field("id", "job ids are up to 64 letters, digits or `_`"),
        );
    }
    let job = api.store.job(&id).await?;
    let Some(job) = job else {
        return Err(Problem::not_found(&format!("job `{id}`")));
    };
    // A job is visible with its tenant — as applied, or (a tenant the API just created) as
    // committed.
    let organization = match api.store.tenant(&job.tenant_id).await? {
        Some(t) => Some(t.organization_id),
        None => {
            let (target, tenant) = (api.writes.clone(), job.tenant_id.clone());
            tokio::task::spawn_blocking(move || writes::committed(&target, &tenant))
                .await?
                .ok()
                .flatten()
                .map(|c| c.organization)
        }
    };
    if !organization.is_some_and(|o| caller.sees_ids(&job.tenant_id, &o)) {
        return Err(Problem::not_found(&format!("job `{id}`")));
    }
    // A job a later pass took over reports the outcome of the one that converged it.
    let outcome = api.store.outcome_of(job.clone()).await?;
    // Seed 000 spells job states capitalized (Queued, Running, Completed, Failed).
    let state = outcome.state.api_name().to_owned();
    let taken_over = outcome.job_id != job.job_id;
    Ok(axum::Json(views::JobView {
        id: job.job_id.clone(),
        job_id: job.job_id.clone(),
        tenant_id: job.tenant_id,
        action: job.action,
        state,
        created_at: rfc3339(job.created_at),
        updated_at: rfc3339(outcome.updated_at.max(job.updated_at)),
        progress: outcome.progress,
        steps: if taken_over { outcome.steps } else { job.steps },
        commit_sha: job.commit_sha,
        error: outcome.error,
        converged_by: taken_over.then(|| outcome.job_id.clone()),
        links: views::SelfLink {
            self_: format!("{BASE}/jobs/{}", job.job_id),
        },
    })
    .into_response())
}
