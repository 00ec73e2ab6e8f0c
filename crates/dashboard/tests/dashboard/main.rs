//! The dashboard against its real router on 127.0.0.1:0, on SQLite and PostgreSQL.
//!
//! Every case is an `async fn(TestDatabase)`; `suite!` turns each into `sqlite::<name>` and
//! `postgres::<name>` (the latter says "did not run" and passes without
//! `WXHUB_TEST_POSTGRES_URL`).

mod account_flows;
mod common;
mod flows;
mod matrix;
mod operator_pages;
mod protection;
mod push_routes;
mod statistics;

macro_rules! suite {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(testkit::TestDatabase::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = testkit::TestDatabase::postgres().await {
                        crate::$module::$name(db).await;
                    }
                }
            )*
        }
    };
}

suite! {
    statistics::charts_show_the_counted_numbers_to_owners_and_operators,
    flows::open_sign_up_makes_owners_when_configured,
    operator_pages::operators_filter_and_search_every_account,
    operator_pages::operators_disable_and_enable_owners,
    operator_pages::operators_see_platform_health,
    operator_pages::owners_see_their_accounts_activity,
    operator_pages::operators_reset_a_lost_second_factor,
    matrix::every_route_answers_each_role_as_the_table_says,
    matrix::owners_see_only_their_own_accounts,
    protection::every_state_changing_route_refuses_a_form_without_its_token,
    protection::a_cross_site_post_is_refused_with_a_clear_page,
    protection::signing_in_gives_a_new_session_id_and_a_planted_one_is_worthless,
    protection::sessions_end_after_30_idle_minutes_and_12_hours_in_all,
    protection::sign_out_everywhere_ends_every_session_of_the_person,
    protection::sign_in_is_rate_limited_per_account_without_telling_who_exists,
    protection::sign_in_is_rate_limited_per_ip,
    protection::pages_carry_the_security_headers,
    protection::https_cookies_are_host_prefixed_and_operators_must_enrol_totp,
    flows::the_first_operator_sets_up_through_the_setup_link_once,
    flows::an_invited_owner_enrols_totp_and_signs_in_with_a_code_once,
    flows::operators_page_through_every_account_and_invite_owners,
    flows::the_language_follows_the_switch_then_accept_language,
    account_flows::an_owner_adds_an_account_after_fixing_the_whitelist,
    account_flows::an_owner_runs_an_account_from_its_page,
    account_flows::operators_filter_the_audit_log_and_export_it_streamed,
    push_routes::owners_run_push_routes_from_their_page,
}
