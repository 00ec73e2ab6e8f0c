//! Integration tests: the `wechat` client against the simulator on 127.0.0.1:0, one test per
//! rule of docs/wechat.md §1–§7 and the §11 checklist, and of docs/wechat-2.md §1–§4 (QR
//! codes). Time moves with a shared ManualClock; the only real waits are push delivery
//! timeouts (configured short) and injected latency.

mod callback_check;
mod common;
mod control;
mod datacube;
mod faults;
mod oauth;
mod push;
mod qrcode;
mod quota;
mod tokens;
mod users;
