//! The statistics crate against real databases: every case runs as `sqlite::<name>` and
//! `postgres::<name>`, each on a fresh database.

mod common;
mod counting;
mod datacube;

macro_rules! suite {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::common::on_sqlite(crate::$module::$name).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::common::on_postgres(crate::$module::$name).await
                }
            )*
        }
    };
}

suite! {
    counting::counts_land_in_their_hour_day_platform_total_and_ranks,
    counting::two_replicas_writing_the_same_hours_add_up_to_every_event,
    counting::a_failed_flush_is_kept_and_written_once_by_the_next,
    counting::shutdown_writes_what_was_counted_since_the_last_flush,
    counting::pruning_keeps_hours_and_days_within_retention,
    datacube::a_new_account_is_backfilled_in_7_day_windows_then_synced_nightly,
    datacube::yesterday_not_ready_yet_is_asked_again_later,
    datacube::the_daily_call_budget_is_never_exceeded,
    datacube::transient_failures_back_off_and_the_sync_resumes,
    datacube::two_replicas_fetch_each_day_once,
    datacube::an_unverified_account_answering_48001_waits_for_the_next_day,
    datacube::synced_figures_are_pruned_after_their_retention,
    datacube::a_day_wechat_leaves_out_is_recorded_as_missing,
}
