//! The store's test suite, run against SQLite and PostgreSQL.
//!
//! Every case is an `async fn(TestDb)` in one of the modules below; `suite!` turns each into
//! two tests, `sqlite::<name>` and `postgres::<name>`, each on a fresh database. CI checks
//! that `postgres::` tests ran and passed. `files` holds the SQLite-only cases about the
//! database file itself.

mod harness;

mod accounts;
#[cfg(unix)]
mod files;
mod migrations;
mod oidc;
mod people;
mod records;
mod sealed;
mod sign_in;
mod stats;
mod tokens;

macro_rules! suite {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::harness::on_sqlite(crate::$module::$name).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::harness::on_postgres(crate::$module::$name).await
                }
            )*
        }
    };
}

suite! {
    migrations::migrations_apply_and_are_idempotent,
    migrations::newer_schema_is_refused,
    migrations::unreachable_database_fails_fast_without_leaking_the_password,
    migrations::silent_database_server_times_out,
    migrations::a_relay_url_becomes_the_accounts_relay_route,
    people::user_email_is_unique_case_insensitively,
    people::session_is_valid_until_expiry_and_ends_when_user_is_disabled,
    people::user_owning_accounts_cannot_be_deleted,
    accounts::account_crud_round_trips,
    accounts::duplicate_appid_is_rejected,
    accounts::deleting_an_account_shreds_its_secrets_and_cascades,
    accounts::accounts_page_by_id_without_secrets,
    accounts::accounts_are_created_in_batches_all_or_none,
    accounts::account_health_lists_by_owner_in_pages_with_token_state,
    accounts::account_health_filters_by_state_kind_and_search_and_counts,
    tokens::lease_claim_has_exactly_one_winner,
    tokens::held_lease_cannot_be_claimed_until_it_expires,
    tokens::stale_fence_cannot_write_back,
    tokens::failure_is_fenced_counted_and_releases_the_lease,
    tokens::released_lease_can_be_claimed_at_once,
    tokens::due_refreshes_skip_leased_future_and_disabled_accounts,
    tokens::stable_force_is_limited_per_day_and_spaced,
    tokens::cache_rows_carry_appid_mode_and_wrapped_dek,
    tokens::earliest_due_skips_leases_and_disabled_accounts,
    tokens::token_refresh_is_announced_to_listeners,
    tokens::refresh_claim_takes_lease_fence_and_budget_in_one_statement,
    tokens::concurrent_refresh_claims_take_one_lease_and_one_unit,
    tokens::fenced_write_back_announces_the_token_itself,
    tokens::every_end_of_a_lease_is_announced,
    records::end_user_upsert_keeps_first_login_and_fills_profile,
    records::unsubscribe_keeps_the_user_and_login_data,
    records::push_dedup_key_is_recorded_once,
    records::push_account_reads_account_secrets_settings_and_routes_at_once,
    records::push_replies_are_finished_in_one_batch,
    records::a_push_is_recorded_once_per_message_and_nonce,
    records::delayed_subscribe_does_not_undo_a_later_unsubscribe,
    records::revoked_api_key_no_longer_authenticates,
    records::an_unknown_api_key_is_refused_without_a_write,
    records::audit_log_lists_newest_first,
    records::announced_changes_reach_a_feed_once_and_in_order,
    records::a_failed_change_leaves_no_audit_entry_and_no_announcement,
    oidc::auth_code_is_single_use_and_reuse_revokes_its_tokens,
    oidc::expired_or_foreign_auth_code_is_not_redeemed,
    oidc::pending_authorization_finishes_once,
    oidc::expired_pending_logins_are_swept_in_bounded_batches,
    oidc::client_id_is_unique_and_redirect_uris_round_trip,
    oidc::new_signing_key_retires_the_previous_one,
    oidc::concurrent_redemptions_spend_once_and_revoke_the_issued_token,
    oidc::next_key_is_published_then_promoted_and_one_key_is_active,
    oidc::each_algorithm_has_its_own_active_and_next_key,
    oidc::scan_login_is_marked_by_ticket_and_scene_once_and_finishes_once,
    oidc::one_query_lookups_agree_with_the_separate_ones,
    sealed::sealed_deks_are_counted_per_holder_and_kek,
    sealed::every_holder_lists_other_keks_and_replaces_only_unchanged_rows,
    sealed::migration_6_splits_signing_keys_sealed_in_one_blob,
    sign_in::sessions_end_when_idle_or_past_expiry_and_rotate_on_step_up,
    sign_in::totp_enrolment_confirms_once_and_each_step_is_accepted_once,
    stats::stats_batches_add_up_across_flushes_and_writers,
    stats::series_totals_and_platform_read_ranges_and_metrics,
    stats::series_sum_by_week_and_month_on_the_china_calendar,
    stats::top_accounts_rank_by_activity_and_failures_per_period,
    stats::counts_of_a_deleted_account_are_dropped_not_refused,
    stats::pruning_removes_only_rows_past_retention,
}
