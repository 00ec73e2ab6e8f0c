//! Rebuild when a migration changes: `sqlx::migrate!` embeds the files at compile time, and a
//! proc macro is not re-run for files it does not know about (a newly added migration).

fn main() {
    println!("cargo:rerun-if-changed=../../migrations/sqlite");
    println!("cargo:rerun-if-changed=../../migrations/postgres");
}
