//! Tests of the PostgreSQL backend on a throwaway cluster ([`TestPostgres`]): the whole conformance
//! suite, opening by URL, and what only several processes on one database show: agents leasing
//! through separate pools never get the same job.

use std::collections::HashSet;

use crate::test_postgres::TestPostgres;
use crate::*;

async fn fresh() -> (TestPostgres, Store) {
    let postgres = TestPostgres::start().await;
    let store = Store::open(postgres.url(), std::path::Path::new("/nonexistent"))
        .await
        .unwrap();
    (postgres, store)
}

conformance_tests!(fresh);

#[tokio::test]
async fn opening_by_url_migrates_once_and_reopens() {
    let postgres = TestPostgres::start().await;
    let first = PostgresStore::open(postgres.url()).await.unwrap();
    assert_eq!(
        first.schema_version().await.unwrap(),
        postgres::POSTGRES_MIGRATIONS.len() as i64
    );
    assert_eq!(
        postgres::POSTGRES_MIGRATIONS.len(),
        sqlite::SQLITE_MIGRATIONS.len(),
        "both backends have every migration"
    );
    first.create_user("ada", "h", false).await.unwrap();
    let url = postgres.url().replace("postgres://", "postgresql://");
    let again = Store::open(&url, std::path::Path::new("/nonexistent"))
        .await
        .unwrap();
    assert_eq!(again.count_users().await.unwrap(), 1);
}

#[tokio::test]
async fn an_unreachable_server_is_an_open_error_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://ci:secret@127.0.0.1:{port}/lockgate");
    let err = Store::open(&url, std::path::Path::new("/nonexistent"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    let message = err.to_string();
    assert!(!message.contains("secret"), "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{port}/lockgate")),
        "{message}"
    );
}

/// Two stores (as two server processes would have) lease from one queue at once: every job goes to
/// exactly one agent, and all of them are leased.
#[tokio::test]
async fn agents_of_two_servers_never_lease_one_job_twice() {
    let postgres = TestPostgres::start().await;
    let one = Store::new(PostgresStore::open(postgres.url()).await.unwrap());
    let two = Store::new(PostgresStore::open(postgres.url()).await.unwrap());
    let (_, _, pipeline) = conformance::pipeline(&*one).await;
    let jobs: Vec<NewJob> = (0..60)
        .map(|n| conformance::new_job(&format!("job{n}"), "queued"))
        .collect();
    let run = conformance::new_run(pipeline.id, "refs/heads/main");
    // Runs created through both stores at once still number 1, 2, 3, ... without a gap.
    let (a, b) = tokio::join!(
        one.create_run(&run, &jobs[..30]),
        two.create_run(&run, &jobs[30..])
    );
    let mut numbers = [a.unwrap().number, b.unwrap().number];
    numbers.sort();
    assert_eq!(numbers, [1, 2]);

    let mut agents = Vec::new();
    for n in 0..16 {
        let store = if n % 2 == 0 { one.clone() } else { two.clone() };
        agents.push(tokio::spawn(async move {
            let mut leased = Vec::new();
            let lease = format!("lease-{n}");
            while let Some(job) = store
                .lease_next_job(
                    &format!("agent-{n}"),
                    "Linux",
                    &lease,
                    now_millis() + 60_000,
                )
                .await
                .unwrap()
            {
                assert!(
                    store
                        .finish_leased_job(job.id, &lease, "succeeded", "{}")
                        .await
                        .unwrap()
                );
                leased.push(job.id);
            }
            leased
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for agent in agents {
        for id in agent.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "job {id} was leased twice");
        }
    }
    assert_eq!(total, 60);
}
