//! Completed jobs' logs move from the database to the object storage (`objects.rs`: the data folder or
//! a bucket): a background pass replaces a finished job's compressed chunks by one chunk naming an
//! object `logs/job-<id>-<attempt>-<sequence>` that holds all their lines. Readers go through
//! [`chunk_lines`], which reads either kind. Several servers may archive the same job at once: the
//! store replaces the chunks only if they are still the ones that were read.

use std::time::Duration;

use lockgate_store::{LogArchive, LogChunk};

use crate::AppState;
use crate::live::{LogLine, compress_lines, decompress_lines};
use crate::objects::Objects;

/// How often the archiver looks for completed jobs whose log is still in the database.
const ARCHIVE_EVERY: Duration = Duration::from_secs(2);

/// Jobs archived per pass at most.
const ARCHIVE_BATCH: i64 = 50;

/// The lines of one stored chunk: from the database, or from the object an archived chunk names. A
/// missing or unreadable object becomes one line saying so, as a damaged chunk does.
pub async fn chunk_lines(objects: &Objects, chunk: &LogChunk) -> Vec<LogLine> {
    let Some(key) = &chunk.object else {
        return decompress_lines(&chunk.compressed);
    };
    let text = match objects.get(key).await {
        Ok(Some(bytes)) => return decompress_lines(&bytes),
        Ok(None) => format!(
            "(this part of the log is missing from {})",
            objects.describe()
        ),
        Err(error) => format!("(this part of the log cannot be read: {error})"),
    };
    vec![LogLine { step: None, text }]
}

/// Archives completed jobs' logs every [`ARCHIVE_EVERY`], for as long as the server runs. A pass that
/// fails (the bucket is away) says so once and is tried again.
pub async fn archive_logs(state: AppState) {
    let mut last_error = String::new();
    loop {
        tokio::time::sleep(ARCHIVE_EVERY).await;
        let error = match archive_pass(&state).await {
            Ok(()) => String::new(),
            Err(error) => error,
        };
        if !error.is_empty() && error != last_error {
            eprintln!("lockgate-server: archiving logs: {error}");
        }
        last_error = error;
    }
}

/// One pass: every completed job with chunks in the database, up to [`ARCHIVE_BATCH`].
pub async fn archive_pass(state: &AppState) -> Result<(), String> {
    let jobs = state
        .store
        .jobs_with_logs_to_archive(ARCHIVE_BATCH)
        .await
        .map_err(|e| e.to_string())?;
    for job_id in jobs {
        archive_job_log(state, job_id).await?;
    }
    Ok(())
}

/// Moves one completed job's log to the object storage: the object is written first, then the
/// chunks are replaced by one naming it; an object a replaced archived chunk named is removed.
async fn archive_job_log(state: &AppState, job_id: i64) -> Result<(), String> {
    let Some(job) = state
        .store
        .job_by_id(job_id)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    if job.status != "completed" {
        return Ok(());
    }
    let chunks = state
        .store
        .log_chunks(job_id)
        .await
        .map_err(|e| e.to_string())?;
    let Some(last) = chunks.last() else {
        return Ok(());
    };
    let mut lines = Vec::new();
    for chunk in &chunks {
        lines.extend(chunk_lines(&state.objects, chunk).await);
    }
    let archive = LogArchive {
        job_id,
        attempt: job.attempt,
        through_sequence: last.sequence,
        chunk_count: chunks.len() as i64,
        line_count: chunks.iter().map(|chunk| chunk.line_count).sum(),
        object: format!("logs/job-{job_id}-{}-{}", job.attempt, last.sequence),
    };
    state
        .objects
        .put_bytes(&archive.object, compress_lines(&lines))
        .await
        .map_err(|e| e.to_string())?;
    let replaced = state
        .store
        .archive_log_chunks(&archive)
        .await
        .map_err(|e| e.to_string())?;
    if replaced {
        // Earlier archives of this attempt are now part of the new object.
        for chunk in &chunks {
            if let Some(key) = &chunk.object
                && *key != archive.object
            {
                let _ = state.objects.delete(key).await;
            }
        }
    }
    Ok(())
}
