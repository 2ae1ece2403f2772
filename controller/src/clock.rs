//! The one place the controller reads the wall clock; the core is handed
//! what it returns.

use std::time::SystemTime;

use controller_core::clock::Timestamp;

pub fn now() -> Timestamp {
    Timestamp::from_system(SystemTime::now())
}
