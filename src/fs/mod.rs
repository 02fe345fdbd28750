pub mod ext4;
pub mod fat;
mod fat_chains;
