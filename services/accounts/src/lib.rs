//! The accounts service of Kizuna.
