//! One module per task, each with one `run(self, ctx)`.

mod bench;
mod build_home;
mod check;
mod demo;
mod deploy;
mod diff;
mod doctor;
mod gc;
mod generations;
mod list;
mod new_host;
mod new_user;
mod option;
mod packages;
mod rollback;
mod switch;
mod test;
mod uninstall;
mod update;
