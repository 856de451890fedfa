//! The same store scenarios against both backends: the embedded redb file and PostgreSQL.

mod common;

use common::postgres;

#[tokio::test]
async fn the_test_server_gives_each_test_its_own_database() {
    let first = postgres::fresh_database();
    let second = postgres::fresh_database();
    assert_ne!(first, second);
    let (client, conn) = tokio_postgres::connect(&first, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT current_database()", &[])
        .await
        .expect("query");
    let name: String = row.get(0);
    assert!(first.ends_with(&name));
}
