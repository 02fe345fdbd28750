/*
 * shim.c - piforge's thin C layer over e2fsprogs' libext2fs.
 *
 * Why a shim instead of bindgen: Rust never sees `struct struct_ext2_filsys`,
 * inodes, io managers or any other libext2fs structure.  Everything crosses
 * the boundary as plain integers, byte buffers and one opaque handle, so the
 * Rust side does not depend on the layout of structures that change between
 * e2fsprogs releases; this file is compiled against the installed headers and
 * picks up their layout.  The sequences of library calls follow e2fsprogs'
 * own users (misc/create_inode.c, debugfs, fuse2fs).
 *
 * The io manager.  A read-write session never writes the image directly:
 * every write libext2fs issues goes into a scratch file (an overlay, one
 * dirty bit per 1 KiB unit) and reads consult the overlay first.  Only
 * pf_commit(), after libext2fs has flushed bitmaps, group descriptors and the
 * superblock, copies the dirty units into the image and fsyncs it.  A session
 * that is dropped (an error, a panic, a caller that changes its mind) leaves
 * the image byte-for-byte unchanged.
 *
 * Time.  fs->now is set to the caller's clock right after opening; libext2fs
 * 1.47 uses `fs->now ? fs->now : time(0)` wherever it stamps a time (new
 * inodes, s_wtime, dtime), and the shim stamps every other time itself.
 *
 * Bounds.  A handle is opened on `length` bytes at `offset` of the image (a
 * partition): every read or write past that range fails with
 * PF_ET_PAST_PARTITION instead of touching a neighbouring partition.
 *
 * Thread safety: no global mutable state except the com_err table, which is
 * registered once under pthread_once.  One handle must only be used by one
 * thread at a time.
 *
 * Layouts shared with Rust (struct pf_info, struct pf_stat) are pinned by the
 * _Static_asserts below and by the same numbers in ffi.rs.
 */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/types.h>
#include <unistd.h>

#include <ext2fs/ext2_fs.h>
#include <ext2fs/ext2fs.h>
#include <et/com_err.h>

/*
 * What this file needs from libext2fs (build.rs checks the same before
 * compiling it, with a friendlier message): e2fsprogs 1.47.0 or newer.
 */
#ifndef EXT4_FEATURE_COMPAT_ORPHAN_FILE
#error "piforge needs libext2fs 1.47.0 or newer (orphan_file support); install libext2fs-dev >= 1.47"
#endif
#ifndef EXT4_FEATURE_RO_COMPAT_ORPHAN_PRESENT
#error "piforge needs libext2fs 1.47.0 or newer (orphan_present); install libext2fs-dev >= 1.47"
#endif

#define PF_UNIT 1024u
#define PF_NAME_PREFIX "piforge-overlay:"
/*
 * The shim's own error code: an I/O past the end of the partition.  Outside
 * errno's range (< 4096) and outside the ext2 com_err table.
 */
#define PF_ET_PAST_PARTITION 0x70660001L

/* ------------------------------------------------------------------ */
/* Overlay io manager                                                  */
/* ------------------------------------------------------------------ */

struct pf_io {
	int img_fd;           /* the image file */
	uint64_t base;        /* byte offset of the filesystem in the image */
	uint64_t length;      /* bytes of the image from `base` the filesystem may use */
	int refused;          /* an I/O past `length` was refused (libext2fs may rename the error) */
	int rw;               /* writes allowed (into the overlay) */
	int scratch_fd;       /* overlay data, at `scratch_base` + filesystem-relative offsets */
	uint64_t scratch_base; /* 0 for a scratch file; `base` when the overlay is another image */
	int split;            /* the overlay is the output image itself: commit copies nothing */
	uint8_t *dirty;       /* one bit per PF_UNIT of the filesystem */
	uint64_t dirty_cap;   /* capacity of `dirty` in units */
	struct struct_io_stats stats;
};

static int dirty_get(const struct pf_io *io, uint64_t unit)
{
	if (unit >= io->dirty_cap)
		return 0;
	return (io->dirty[unit >> 3] >> (unit & 7)) & 1;
}

static errcode_t dirty_set(struct pf_io *io, uint64_t unit)
{
	if (unit >= io->dirty_cap) {
		uint64_t cap = io->dirty_cap ? io->dirty_cap : 8192;
		while (cap <= unit)
			cap *= 2;
		uint8_t *n = realloc(io->dirty, (size_t)(cap / 8));
		if (!n)
			return EXT2_ET_NO_MEMORY;
		memset(n + io->dirty_cap / 8, 0, (size_t)((cap - io->dirty_cap) / 8));
		io->dirty = n;
		io->dirty_cap = cap;
	}
	io->dirty[unit >> 3] |= (uint8_t)(1u << (unit & 7));
	return 0;
}

/* pread the whole range; returns bytes read (short only at end of file) or -1. */
static ssize_t full_pread(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static errcode_t full_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno ? errno : EXT2_ET_SHORT_WRITE;
		}
		if (n == 0)
			return EXT2_ET_SHORT_WRITE;
		done += (size_t)n;
	}
	return 0;
}

/* Whether [off, off+len) lies inside the partition. */
static int in_bounds(const struct pf_io *io, uint64_t off, size_t len)
{
	return off <= io->length && (uint64_t)len <= io->length - off;
}

static errcode_t ov_read(struct pf_io *io, uint64_t off, void *buf, size_t len)
{
	uint64_t pos = off, end = off + len;

	if (!in_bounds(io, off, len)) {
		io->refused = 1;
		return PF_ET_PAST_PARTITION;
	}

	while (pos < end) {
		uint64_t unit = pos / PF_UNIT;
		int d = dirty_get(io, unit);
		uint64_t run_end = (unit + 1) * PF_UNIT;
		while (run_end < end && dirty_get(io, run_end / PF_UNIT) == d)
			run_end += PF_UNIT;
		if (run_end > end)
			run_end = end;
		size_t n = (size_t)(run_end - pos);
		char *dst = (char *)buf + (pos - off);
		ssize_t got;
		if (d)
			got = full_pread(io->scratch_fd, dst, n, io->scratch_base + pos);
		else
			got = full_pread(io->img_fd, dst, n, io->base + pos);
		if (got < 0)
			return errno ? errno : EXT2_ET_SHORT_READ;
		if ((size_t)got < n)
			return EXT2_ET_SHORT_READ;
		io->stats.bytes_read += n;
		pos = run_end;
	}
	return 0;
}

static errcode_t ov_write(struct pf_io *io, uint64_t off, const void *buf, size_t len)
{
	uint64_t pos = off, end = off + len;
	errcode_t err;

	if (!io->rw)
		return EXT2_ET_RO_FILSYS;
	if (!in_bounds(io, off, len)) {
		io->refused = 1;
		return PF_ET_PAST_PARTITION;
	}
	if (io->scratch_fd < 0) {
		/* direct mode: the caller edits a throwaway copy, no overlay */
		err = full_pwrite(io->img_fd, buf, len, io->base + off);
		if (!err)
			io->stats.bytes_written += len;
		return err;
	}
	while (pos < end) {
		uint64_t unit = pos / PF_UNIT;
		uint64_t ustart = unit * PF_UNIT, uend = ustart + PF_UNIT;
		const char *src = (const char *)buf + (pos - off);

		if (pos == ustart && end >= uend) {
			/* a run of whole units */
			uint64_t units = (end - pos) / PF_UNIT;
			err = full_pwrite(io->scratch_fd, src, (size_t)(units * PF_UNIT),
					  io->scratch_base + pos);
			if (err)
				return err;
			for (uint64_t u = 0; u < units; u++) {
				err = dirty_set(io, unit + u);
				if (err)
					return err;
			}
			pos += units * PF_UNIT;
		} else {
			/* part of a unit: read, modify, write the whole unit */
			char tmp[PF_UNIT];
			uint64_t stop = end < uend ? end : uend;
			ssize_t got;
			memset(tmp, 0, sizeof(tmp));
			if (dirty_get(io, unit))
				got = full_pread(io->scratch_fd, tmp, PF_UNIT, io->scratch_base + ustart);
			else
				got = full_pread(io->img_fd, tmp, PF_UNIT, io->base + ustart);
			if (got < 0)
				return errno ? errno : EXT2_ET_SHORT_READ;
			memcpy(tmp + (pos - ustart), src, (size_t)(stop - pos));
			err = full_pwrite(io->scratch_fd, tmp, PF_UNIT, io->scratch_base + ustart);
			if (err)
				return err;
			err = dirty_set(io, unit);
			if (err)
				return err;
			pos = stop;
		}
	}
	io->stats.bytes_written += len;
	return 0;
}

static struct struct_io_manager pf_io_manager;

static errcode_t pf_io_open(const char *name, int flags, io_channel *channel)
{
	struct pf_io *io = NULL;
	io_channel ch = NULL;
	errcode_t err;

	if (!name || strncmp(name, PF_NAME_PREFIX, strlen(PF_NAME_PREFIX)) != 0 ||
	    sscanf(name + strlen(PF_NAME_PREFIX), "%p", (void **)&io) != 1 || !io)
		return EXT2_ET_BAD_DEVICE_NAME;
	if ((flags & IO_FLAG_RW) && !io->rw)
		return EXT2_ET_RO_FILSYS;
	err = ext2fs_get_memzero(sizeof(struct struct_io_channel), &ch);
	if (err)
		return err;
	err = ext2fs_get_mem(strlen(name) + 1, &ch->name);
	if (err) {
		ext2fs_free_mem(&ch);
		return err;
	}
	strcpy(ch->name, name);
	ch->magic = EXT2_ET_MAGIC_IO_CHANNEL;
	ch->manager = &pf_io_manager;
	ch->block_size = 1024;
	ch->refcount = 1;
	ch->private_data = io;
	*channel = ch;
	return 0;
}

static errcode_t pf_io_close(io_channel ch)
{
	if (--ch->refcount > 0)
		return 0;
	/* the pf_io state belongs to the pf_fs handle, not to the channel */
	ext2fs_free_mem(&ch->name);
	ext2fs_free_mem(&ch);
	return 0;
}

static errcode_t pf_io_set_blksize(io_channel ch, int blksize)
{
	if (blksize <= 0)
		return EXT2_ET_INVALID_ARGUMENT;
	ch->block_size = blksize;
	return 0;
}

static size_t xfer_size(io_channel ch, int count)
{
	return count < 0 ? (size_t)(-(long)count) : (size_t)count * (size_t)ch->block_size;
}

static errcode_t pf_io_read_blk64(io_channel ch, unsigned long long block, int count, void *data)
{
	return ov_read(ch->private_data, block * (uint64_t)ch->block_size, data, xfer_size(ch, count));
}

static errcode_t pf_io_read_blk(io_channel ch, unsigned long block, int count, void *data)
{
	return pf_io_read_blk64(ch, block, count, data);
}

static errcode_t pf_io_write_blk64(io_channel ch, unsigned long long block, int count, const void *data)
{
	return ov_write(ch->private_data, block * (uint64_t)ch->block_size, data, xfer_size(ch, count));
}

static errcode_t pf_io_write_blk(io_channel ch, unsigned long block, int count, const void *data)
{
	return pf_io_write_blk64(ch, block, count, data);
}

static errcode_t pf_io_flush(io_channel ch)
{
	(void)ch;
	return 0; /* the overlay is written with pwrite; nothing is buffered */
}

static errcode_t pf_io_set_option(io_channel ch, const char *option, const char *arg)
{
	/* The offset and length come from pf_open; nothing may move them. */
	(void)ch;
	(void)option;
	(void)arg;
	return EXT2_ET_INVALID_ARGUMENT;
}

static errcode_t pf_io_get_stats(io_channel ch, io_stats *stats)
{
	struct pf_io *io = ch->private_data;
	io->stats.num_fields = 2;
	if (stats)
		*stats = &io->stats;
	return 0;
}

static struct struct_io_manager pf_io_manager = {
	.magic = EXT2_ET_MAGIC_IO_MANAGER,
	.name = "piforge overlay I/O manager",
	.open = pf_io_open,
	.close = pf_io_close,
	.set_blksize = pf_io_set_blksize,
	.read_blk = pf_io_read_blk,
	.write_blk = pf_io_write_blk,
	.flush = pf_io_flush,
	.write_byte = NULL,      /* closefs falls back to writing the whole superblock */
	.set_option = pf_io_set_option,
	.get_stats = pf_io_get_stats,
	.read_blk64 = pf_io_read_blk64,
	.write_blk64 = pf_io_write_blk64,
	.discard = NULL,
	.cache_readahead = NULL,
	.zeroout = NULL,         /* ext2fs_zero_blocks2 falls back to writing zeros */
};

/* ------------------------------------------------------------------ */
/* Handle                                                              */
/* ------------------------------------------------------------------ */

struct pf_fs {
	ext2_filsys fs;
	struct pf_io io;
};

static pthread_once_t et_once = PTHREAD_ONCE_INIT;
static void et_init(void) { initialize_ext2_error_table(); }

const char *pf_error_message(long code)
{
	pthread_once(&et_once, et_init);
	return error_message((errcode_t)code);
}

static void pf_release(struct pf_fs *h)
{
	if (h->io.img_fd >= 0)
		close(h->io.img_fd); /* also drops the flock */
	free(h->io.dirty);
	free(h);
}

/*
 * Open the filesystem in the `length` bytes at byte `offset` of `path`.  `scratch_fd` (read-write
 * only) is an empty file the overlay may use; the caller keeps ownership.
 * `split_fd` (-1: none) is another image of the same layout the session writes into instead
 * (the overlay, at the filesystem's own offset in it; the caller keeps ownership): `path` is
 * then only read, under a shared lock, and commit copies nothing.  `runs` holds `nruns`
 * pairs (offset, length) of bytes, at image offsets, that `split_fd` already holds over
 * `path` (earlier sessions' writes): reads see them, read-only sessions too, so a chain of
 * sessions each split into the same file sees the ones before.  Runs outside the filesystem
 * are ignored; one inside must cover whole PF_UNITs of it (EINVAL otherwise).
 * `now` becomes fs->now.  Returns 0 or an errcode (errno values for the
 * image file itself, EWOULDBLOCK when another session holds the lock).
 */
long pf_open(const char *path, uint64_t offset, uint64_t length, int rw, int64_t now, int scratch_fd,
	     int split_fd, const uint64_t *runs, uint64_t nruns, struct pf_fs **out)
{
	int split = split_fd >= 0;
	struct pf_fs *h;
	char name[64];
	errcode_t err;
	int flags;

	pthread_once(&et_once, et_init);
	*out = NULL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return EXT2_ET_NO_MEMORY;
	h->io.scratch_fd = -1;
	h->io.img_fd = open(path, (rw && !split ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (h->io.img_fd < 0) {
		err = errno;
		pf_release(h);
		return err;
	}
	/*
	 * Another session holds the lock: fail after a short wait. The wait matters in
	 * multithreaded programs: a child forked by another thread holds a copy of an
	 * earlier descriptor of this image (and its lock) until it execs, even with
	 * O_CLOEXEC, so a lock can look taken for a few milliseconds.
	 */
	for (int tries = 0;; tries++) {
		if (flock(h->io.img_fd, (rw && !split ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0)
			break;
		err = errno;
		if (err != EWOULDBLOCK || tries >= 200) {
			pf_release(h);
			return err;
		}
		usleep(10000);
	}
	h->io.base = offset;
	h->io.length = length;
	h->io.rw = rw ? 1 : 0;
	h->io.scratch_fd = split ? split_fd : (rw ? scratch_fd : -1);
	h->io.scratch_base = split ? offset : 0;
	h->io.split = split;
	for (uint64_t i = 0; split && i < nruns; i++) {
		uint64_t s = runs[2 * i], e = s + runs[2 * i + 1];
		if (e < s) {
			pf_release(h);
			return EINVAL;
		}
		if (e <= offset)
			continue;
		s = s > offset ? s - offset : 0;
		e = e - offset;
		if (s >= length)
			continue;
		if (e > length)
			e = length;
		if (s % PF_UNIT || (e % PF_UNIT && e != length)) {
			pf_release(h);
			return EINVAL;
		}
		for (uint64_t u = s / PF_UNIT; u * PF_UNIT < e; u++) {
			err = dirty_set(&h->io, u);
			if (err) {
				pf_release(h);
				return err;
			}
		}
	}
	snprintf(name, sizeof(name), PF_NAME_PREFIX "%p", (void *)&h->io);

	flags = EXT2_FLAG_64BITS | (rw ? EXT2_FLAG_RW : 0);
	err = ext2fs_open2(name, NULL, flags, 0, 0, &pf_io_manager, &h->fs);
	if (err && h->io.refused)
		err = PF_ET_PAST_PARTITION;
	if (err) {
		h->fs = NULL;
		pf_release(h);
		return err;
	}
	h->fs->now = (time_t)now;
	if (rw) {
		err = ext2fs_read_bitmaps(h->fs);
		if (err && h->io.refused)
			err = PF_ET_PAST_PARTITION;
		if (err) {
			ext2fs_free(h->fs);
			pf_release(h);
			return err;
		}
	}
	*out = h;
	return 0;
}

/*
 * Whether libext2fs asked for bytes past the partition during this session:
 * it reports such a failure under its own name ("Can't read a block bitmap"),
 * so callers ask here to tell the cause.
 */
int pf_io_refused(struct pf_fs *h)
{
	return h ? h->io.refused : 0;
}

/* Throw the session away: nothing reaches the image. */
void pf_abort(struct pf_fs *h)
{
	if (!h)
		return;
	if (h->fs)
		ext2fs_free(h->fs); /* frees without flushing */
	pf_release(h);
}

/*
 * Flush libext2fs' state (into the overlay), then copy the overlay into the
 * image and fsync it (a split session: the overlay is already the output, and
 * its owner syncs it).  `runs` (may be NULL) is told each run of bytes the
 * session wrote, at image offsets, in increasing order.  The handle is freed in
 * every case.
 */
long pf_commit(struct pf_fs *h, void (*runs)(void *ctx, uint64_t off, uint64_t len), void *ctx)
{
	errcode_t err = 0;
	char *buf = NULL;
	const size_t chunk = 1u << 20;

	if (!h)
		return EXT2_ET_INVALID_ARGUMENT;
	err = ext2fs_close2(h->fs, 0);
	if (err && h->io.refused)
		err = PF_ET_PAST_PARTITION;
	if (err) {
		ext2fs_free(h->fs);
		h->fs = NULL;
		pf_release(h);
		return err;
	}
	h->fs = NULL;
	if (!h->io.rw || !h->io.dirty_cap)
		goto out;
	if (runs) {
		for (uint64_t u = 0; u < h->io.dirty_cap;) {
			if (!dirty_get(&h->io, u)) {
				u++;
				continue;
			}
			uint64_t v = u;
			while (v < h->io.dirty_cap && dirty_get(&h->io, v))
				v++;
			runs(ctx, h->io.base + u * PF_UNIT, (v - u) * PF_UNIT);
			u = v;
		}
	}
	if (h->io.split)
		goto out;

	buf = malloc(chunk);
	if (!buf) {
		err = EXT2_ET_NO_MEMORY;
		goto out;
	}
	for (uint64_t u = 0; u < h->io.dirty_cap && !err;) {
		if (!dirty_get(&h->io, u)) {
			u++;
			continue;
		}
		uint64_t v = u;
		while (v < h->io.dirty_cap && dirty_get(&h->io, v) && (v - u + 1) * PF_UNIT <= chunk)
			v++;
		size_t len = (size_t)((v - u) * PF_UNIT);
		ssize_t got = full_pread(h->io.scratch_fd, buf, len, u * PF_UNIT);
		if (got < 0 || (size_t)got != len)
			err = got < 0 && errno ? errno : EXT2_ET_SHORT_READ;
		else
			err = full_pwrite(h->io.img_fd, buf, len, h->io.base + u * PF_UNIT);
		u = v;
	}
	if (!err && fsync(h->io.img_fd) < 0)
		err = errno;
out:
	free(buf);
	pf_release(h);
	return err;
}

/*
 * Record a completed check in the superblock (s_lastcheck), as e2fsck -f does after a clean
 * run: at the session clock, but never before the last mount, since resize2fs compares the
 * two (resize/main.c: "Please run 'e2fsck -f' first" when s_lastcheck < s_mtime).  Only for a
 * filesystem the caller has just checked.
 */
long pf_mark_checked(struct pf_fs *h)
{
	ext2_filsys fs = h->fs;
	int64_t t = (int64_t)fs->now;
	int64_t mtime = (int64_t)fs->super->s_mtime | ((int64_t)fs->super->s_mtime_hi << 32);

	if (!(fs->flags & EXT2_FLAG_RW))
		return EXT2_ET_RO_FILSYS;
	if (t < mtime)
		t = mtime;
	fs->super->s_lastcheck = (__u32)t;
	fs->super->s_lastcheck_hi = (__u8)((uint64_t)t >> 32);
	ext2fs_mark_super_dirty(fs);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Information                                                         */
/* ------------------------------------------------------------------ */

struct pf_info {
	uint64_t blocks_count;
	uint64_t free_blocks;
	uint64_t reserved_blocks;
	uint64_t wtime;
	uint32_t block_size;
	uint32_t inodes_count;
	uint32_t free_inodes;
	uint32_t first_ino;
	uint32_t compat;
	uint32_t incompat;
	uint32_t ro_compat;
	uint32_t last_orphan;
	uint16_t state;
	uint16_t inode_size;
	uint8_t uuid[16];
	char label[17];
};

_Static_assert(sizeof(struct pf_info) == 104, "struct pf_info layout (see ffi.rs)");
_Static_assert(offsetof(struct pf_info, blocks_count) == 0, "pf_info.blocks_count");
_Static_assert(offsetof(struct pf_info, free_blocks) == 8, "pf_info.free_blocks");
_Static_assert(offsetof(struct pf_info, reserved_blocks) == 16, "pf_info.reserved_blocks");
_Static_assert(offsetof(struct pf_info, wtime) == 24, "pf_info.wtime");
_Static_assert(offsetof(struct pf_info, block_size) == 32, "pf_info.block_size");
_Static_assert(offsetof(struct pf_info, inodes_count) == 36, "pf_info.inodes_count");
_Static_assert(offsetof(struct pf_info, free_inodes) == 40, "pf_info.free_inodes");
_Static_assert(offsetof(struct pf_info, first_ino) == 44, "pf_info.first_ino");
_Static_assert(offsetof(struct pf_info, compat) == 48, "pf_info.compat");
_Static_assert(offsetof(struct pf_info, incompat) == 52, "pf_info.incompat");
_Static_assert(offsetof(struct pf_info, ro_compat) == 56, "pf_info.ro_compat");
_Static_assert(offsetof(struct pf_info, last_orphan) == 60, "pf_info.last_orphan");
_Static_assert(offsetof(struct pf_info, state) == 64, "pf_info.state");
_Static_assert(offsetof(struct pf_info, inode_size) == 66, "pf_info.inode_size");
_Static_assert(offsetof(struct pf_info, uuid) == 68, "pf_info.uuid");
_Static_assert(offsetof(struct pf_info, label) == 84, "pf_info.label");

size_t pf_sizeof_info(void) { return sizeof(struct pf_info); }

void pf_get_info(struct pf_fs *h, struct pf_info *out)
{
	ext2_filsys fs = h->fs;
	struct ext2_super_block *sb = fs->super;
	uint64_t free_blocks = 0, free_inodes = 0;

	memset(out, 0, sizeof(*out));
	/* The group descriptors are what the allocator uses; the superblock
	 * totals can lag behind on a filesystem last written by the kernel. */
	for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
		free_blocks += ext2fs_bg_free_blocks_count(fs, g);
		free_inodes += ext2fs_bg_free_inodes_count(fs, g);
	}
	out->blocks_count = ext2fs_blocks_count(sb);
	out->free_blocks = EXT2FS_C2B(fs, free_blocks);
	out->reserved_blocks = ext2fs_r_blocks_count(sb);
	out->wtime = sb->s_wtime;
	out->block_size = fs->blocksize;
	out->inodes_count = sb->s_inodes_count;
	out->free_inodes = (uint32_t)free_inodes;
	out->first_ino = EXT2_FIRST_INO(sb);
	out->compat = sb->s_feature_compat;
	out->incompat = sb->s_feature_incompat;
	out->ro_compat = sb->s_feature_ro_compat;
	out->last_orphan = sb->s_last_orphan;
	out->state = sb->s_state;
	out->inode_size = EXT2_INODE_SIZE(sb);
	memcpy(out->uuid, sb->s_uuid, 16);
	memcpy(out->label, sb->s_volume_name, 16);
	out->label[16] = 0;
}

/* ------------------------------------------------------------------ */
/* Inodes                                                              */
/* ------------------------------------------------------------------ */

#define HAS_EXTRA(fs, in, field)                                              \
	(EXT2_INODE_SIZE((fs)->super) > EXT2_GOOD_OLD_INODE_SIZE &&           \
	 (unsigned)EXT2_GOOD_OLD_INODE_SIZE + (in)->i_extra_isize >=          \
		 offsetof(struct ext2_inode_large, field) + sizeof((in)->field))

static errcode_t read_large(ext2_filsys fs, ext2_ino_t ino, struct ext2_inode_large *in)
{
	memset(in, 0, sizeof(*in));
	return ext2fs_read_inode_full(fs, ino, (struct ext2_inode *)in, sizeof(*in));
}

static errcode_t write_large(ext2_filsys fs, ext2_ino_t ino, struct ext2_inode_large *in)
{
	return ext2fs_write_inode_full(fs, ino, (struct ext2_inode *)in, sizeof(*in));
}

/* Linux's encoding: low 32 bits in the base field, 2 epoch bits in *_extra. */
static void encode_time(int64_t t, __u32 *base, __u32 *extra, int has_extra)
{
	*base = (__u32)t;
	if (has_extra)
		*extra = (__u32)((((uint64_t)t - (uint64_t)(int64_t)(int32_t)(__u32)t) >> 32) & EXT4_EPOCH_MASK);
}

static int64_t decode_time(__u32 base, __u32 extra, int has_extra)
{
	int64_t t = (int64_t)(int32_t)base;
	if (has_extra)
		t += (int64_t)(extra & EXT4_EPOCH_MASK) << 32;
	return t;
}

struct pf_stat {
	uint64_t size;
	int64_t atime;
	int64_t mtime;
	int64_t ctime;
	uint64_t blocks;   /* in filesystem blocks, including metadata and EA blocks */
	uint32_t ino;
	uint32_t uid;
	uint32_t gid;
	uint32_t flags;
	uint16_t mode;     /* type and permission bits */
	uint16_t links;
};

_Static_assert(sizeof(struct pf_stat) == 64, "struct pf_stat layout (see ffi.rs)");
_Static_assert(offsetof(struct pf_stat, size) == 0, "pf_stat.size");
_Static_assert(offsetof(struct pf_stat, atime) == 8, "pf_stat.atime");
_Static_assert(offsetof(struct pf_stat, mtime) == 16, "pf_stat.mtime");
_Static_assert(offsetof(struct pf_stat, ctime) == 24, "pf_stat.ctime");
_Static_assert(offsetof(struct pf_stat, blocks) == 32, "pf_stat.blocks");
_Static_assert(offsetof(struct pf_stat, ino) == 40, "pf_stat.ino");
_Static_assert(offsetof(struct pf_stat, uid) == 44, "pf_stat.uid");
_Static_assert(offsetof(struct pf_stat, gid) == 48, "pf_stat.gid");
_Static_assert(offsetof(struct pf_stat, flags) == 52, "pf_stat.flags");
_Static_assert(offsetof(struct pf_stat, mode) == 56, "pf_stat.mode");
_Static_assert(offsetof(struct pf_stat, links) == 58, "pf_stat.links");

size_t pf_sizeof_stat(void) { return sizeof(struct pf_stat); }

long pf_stat(struct pf_fs *h, uint32_t ino, struct pf_stat *st)
{
	ext2_filsys fs = h->fs;
	struct ext2_inode_large in;
	errcode_t err = read_large(fs, ino, &in);
	if (err)
		return err;
	memset(st, 0, sizeof(*st));
	st->ino = ino;
	st->mode = in.i_mode;
	st->uid = inode_uid(in);
	st->gid = inode_gid(in);
	st->size = EXT2_I_SIZE(&in);
	st->links = in.i_links_count;
	st->flags = in.i_flags;
	st->atime = decode_time(in.i_atime, in.i_atime_extra, HAS_EXTRA(fs, &in, i_atime_extra));
	st->mtime = decode_time(in.i_mtime, in.i_mtime_extra, HAS_EXTRA(fs, &in, i_mtime_extra));
	st->ctime = decode_time(in.i_ctime, in.i_ctime_extra, HAS_EXTRA(fs, &in, i_ctime_extra));
	st->blocks = ext2fs_get_stat_i_blocks(fs, (struct ext2_inode *)&in) * 512 / fs->blocksize;
	return 0;
}

/*
 * Set ownership, permissions (when set_mode) and times of an inode.
 * crtime is set to ctime for inodes created in this session (set_crtime).
 */
long pf_set_meta(struct pf_fs *h, uint32_t ino, int set_mode, uint16_t perm, int set_owner,
		 uint32_t uid, uint32_t gid, int set_times, int64_t atime, int64_t mtime,
		 int64_t ctime, int set_crtime)
{
	ext2_filsys fs = h->fs;
	struct ext2_inode_large in;
	errcode_t err = read_large(fs, ino, &in);
	if (err)
		return err;
	if (set_mode)
		in.i_mode = (__u16)((in.i_mode & LINUX_S_IFMT) | (perm & 07777));
	if (set_owner) {
		in.i_uid = (__u16)(uid & 0xffff);
		ext2fs_set_i_uid_high(in, (__u16)(uid >> 16));
		in.i_gid = (__u16)(gid & 0xffff);
		ext2fs_set_i_gid_high(in, (__u16)(gid >> 16));
	}
	if (set_times) {
		encode_time(atime, &in.i_atime, &in.i_atime_extra, HAS_EXTRA(fs, &in, i_atime_extra));
		encode_time(mtime, &in.i_mtime, &in.i_mtime_extra, HAS_EXTRA(fs, &in, i_mtime_extra));
	}
	encode_time(ctime, &in.i_ctime, &in.i_ctime_extra, HAS_EXTRA(fs, &in, i_ctime_extra));
	if (set_crtime && HAS_EXTRA(fs, &in, i_crtime_extra))
		encode_time(ctime, &in.i_crtime, &in.i_crtime_extra, 1);
	return write_large(fs, ino, &in);
}

/* A directory's entries changed: mtime = ctime = now. */
static errcode_t touch_dir(ext2_filsys fs, ext2_ino_t dir)
{
	struct ext2_inode_large in;
	errcode_t err = read_large(fs, dir, &in);
	if (err)
		return err;
	encode_time(fs->now, &in.i_mtime, &in.i_mtime_extra, HAS_EXTRA(fs, &in, i_mtime_extra));
	encode_time(fs->now, &in.i_ctime, &in.i_ctime_extra, HAS_EXTRA(fs, &in, i_ctime_extra));
	return write_large(fs, dir, &in);
}

/* ------------------------------------------------------------------ */
/* Lookups and reading                                                 */
/* ------------------------------------------------------------------ */

long pf_namei(struct pf_fs *h, const char *path, int follow, uint32_t *ino)
{
	ext2_ino_t out = 0;
	errcode_t err;
	if (follow)
		err = ext2fs_namei_follow(h->fs, EXT2_ROOT_INO, EXT2_ROOT_INO, path, &out);
	else
		err = ext2fs_namei(h->fs, EXT2_ROOT_INO, EXT2_ROOT_INO, path, &out);
	*ino = out;
	return err;
}

long pf_lookup(struct pf_fs *h, uint32_t dir, const char *name, uint32_t *ino)
{
	ext2_ino_t out = 0;
	errcode_t err = ext2fs_lookup(h->fs, dir, name, (int)strlen(name), NULL, &out);
	*ino = out;
	return err;
}

/* Target of a symlink into buf (not NUL-terminated); *len gets its length. */
long pf_readlink(struct pf_fs *h, uint32_t ino, char *buf, size_t cap, size_t *len)
{
	ext2_filsys fs = h->fs;
	struct ext2_inode_large in;
	errcode_t err = read_large(fs, ino, &in);
	uint64_t size;

	if (err)
		return err;
	if (!LINUX_S_ISLNK(in.i_mode))
		return EXT2_ET_INVALID_ARGUMENT;
	size = EXT2_I_SIZE(&in);
	if (size > cap)
		return EXT2_ET_INVALID_ARGUMENT;
	*len = (size_t)size;
	if (ext2fs_is_fast_symlink((struct ext2_inode *)&in)) {
		if (size > sizeof(in.i_block))
			return EXT2_ET_INODE_CORRUPTED;
		memcpy(buf, in.i_block, (size_t)size);
		return 0;
	}
	if (in.i_flags & EXT4_INLINE_DATA_FL) {
		size_t isz = 0;
		char *tmp;
		err = ext2fs_inline_data_size(fs, ino, &isz);
		if (err)
			return err;
		err = ext2fs_get_mem(isz + 1, &tmp);
		if (err)
			return err;
		err = ext2fs_inline_data_get(fs, ino, (struct ext2_inode *)&in, tmp, &isz);
		if (!err) {
			if (isz < size)
				err = EXT2_ET_INODE_CORRUPTED;
			else
				memcpy(buf, tmp, (size_t)size);
		}
		ext2fs_free_mem(&tmp);
		return err;
	}
	/* slow symlink: the target is the content of the first block */
	{
		ext2_file_t f;
		unsigned int got = 0;
		err = ext2fs_file_open(fs, ino, 0, &f);
		if (err)
			return err;
		err = ext2fs_file_read(f, buf, (unsigned int)size, &got);
		ext2fs_file_close(f);
		if (!err && got != size)
			err = EXT2_ET_SHORT_READ;
		return err;
	}
}

typedef int (*pf_dir_cb)(void *ctx, const char *name, size_t name_len, uint32_t ino, int file_type);

struct dir_ctx {
	pf_dir_cb cb;
	void *ctx;
};

static int dir_proc(ext2_ino_t dir, int entry, struct ext2_dir_entry *dirent, int offset,
		    int blocksize, char *buf, void *priv)
{
	struct dir_ctx *d = priv;
	(void)dir; (void)entry; (void)offset; (void)blocksize; (void)buf;
	if (!dirent->inode)
		return 0;
	if (d->cb(d->ctx, dirent->name, (size_t)ext2fs_dirent_name_len(dirent), dirent->inode,
		  ext2fs_dirent_file_type(dirent)))
		return DIRENT_ABORT;
	return 0;
}

/* Calls cb for every entry (including "." and ".."), in on-disk order. */
long pf_list_dir(struct pf_fs *h, uint32_t ino, pf_dir_cb cb, void *ctx)
{
	struct dir_ctx d = { cb, ctx };
	return ext2fs_dir_iterate2(h->fs, ino, 0, NULL, dir_proc, &d);
}

long pf_file_open(struct pf_fs *h, uint32_t ino, int write, void **out)
{
	ext2_file_t f = NULL;
	errcode_t err = ext2fs_file_open(h->fs, ino, write ? EXT2_FILE_WRITE : 0, &f);
	*out = f;
	return err;
}

long pf_file_read(void *file, void *buf, size_t len, size_t *got)
{
	unsigned int n = 0;
	errcode_t err;
	if (len > (1u << 30))
		len = 1u << 30;
	err = ext2fs_file_read((ext2_file_t)file, buf, (unsigned int)len, &n);
	*got = n;
	return err;
}

long pf_file_close(void *file)
{
	return ext2fs_file_close((ext2_file_t)file);
}

/* ------------------------------------------------------------------ */
/* Writing a new file's content                                        */
/* ------------------------------------------------------------------ */

/*
 * A writer fills a new, empty regular file with exactly `size` bytes.
 *
 * Fast path (extent-mapped inode): all the blocks are allocated up front by
 * ext2fs_fallocate (initialized extents, no zeroing), i_size is set, and the
 * content goes straight to the mapped physical blocks, one
 * io_channel_write_blk64 (one pwrite, or one overlay write) per contiguous
 * run of each chunk the caller passes.  ext2fs_file_write would instead
 * allocate and write block by block, rewriting the inode and extent blocks
 * each time.  The allocator's choices depend only on the bitmaps and the
 * inode, so identical edits still give identical images, whatever the mode.
 *
 * Slow path (block-mapped or inline-data inodes): ext2fs_file_write.
 */
struct pf_run {
	blk64_t lblk, pblk, len;
};

struct pf_writer {
	ext2_filsys fs;
	ext2_file_t file;      /* slow path only */
	uint64_t size, done;   /* bytes expected, bytes received */
	uint32_t bs;
	struct pf_run *runs;
	size_t nruns, cur;
	char *tail;            /* a partial block not yet written */
	size_t tail_len;
};

static void writer_free(struct pf_writer *w)
{
	if (w->file)
		ext2fs_file_close(w->file);
	free(w->runs);
	free(w->tail);
	free(w);
}

/* The leaf extents of an inode, which must map [0, nblocks) contiguously and initialized. */
static errcode_t collect_runs(struct pf_writer *w, ext2_ino_t ino, struct ext2_inode *inode,
			      blk64_t nblocks)
{
	ext2_extent_handle_t eh;
	struct ext2fs_extent ext;
	size_t cap = 0;
	blk64_t next = 0;
	int op = EXT2_EXTENT_ROOT;
	errcode_t err = ext2fs_extent_open2(w->fs, ino, inode, &eh);
	if (err)
		return err;
	for (;;) {
		err = ext2fs_extent_get(eh, op, &ext);
		op = EXT2_EXTENT_NEXT;
		if (err == EXT2_ET_EXTENT_NO_NEXT) {
			err = 0;
			break;
		}
		if (err)
			break;
		if (!(ext.e_flags & EXT2_EXTENT_FLAGS_LEAF) || !ext.e_len)
			continue;
		if (ext.e_lblk != next || (ext.e_flags & EXT2_EXTENT_FLAGS_UNINIT)) {
			err = EXT2_ET_INODE_CORRUPTED;
			break;
		}
		if (w->nruns == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct pf_run *n = realloc(w->runs, ncap * sizeof(*n));
			if (!n) {
				err = EXT2_ET_NO_MEMORY;
				break;
			}
			w->runs = n;
			cap = ncap;
		}
		w->runs[w->nruns].lblk = ext.e_lblk;
		w->runs[w->nruns].pblk = ext.e_pblk;
		w->runs[w->nruns].len = ext.e_len;
		w->nruns++;
		next = ext.e_lblk + ext.e_len;
	}
	ext2fs_extent_free(eh);
	if (!err && next != nblocks)
		err = EXT2_ET_INODE_CORRUPTED;
	return err;
}

/* `size` (> 0) bytes for the new empty file `ino`. */
long pf_write_open(struct pf_fs *h, uint32_t ino, uint64_t size, void **out)
{
	ext2_filsys fs = h->fs;
	struct ext2_inode inode;
	struct pf_writer *w;
	errcode_t err;

	*out = NULL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return EXT2_ET_NO_MEMORY;
	w->fs = fs;
	w->size = size;
	w->bs = fs->blocksize;
	err = ext2fs_read_inode(fs, ino, &inode);
	if (err)
		goto fail;
	if (EXT2_I_SIZE(&inode) != 0 || ext2fs_inode_data_blocks2(fs, &inode) != 0) {
		err = EXT2_ET_INVALID_ARGUMENT; /* only for new, empty files */
		goto fail;
	}
	if (!(inode.i_flags & EXT4_EXTENTS_FL) || (inode.i_flags & EXT4_INLINE_DATA_FL)) {
		err = ext2fs_file_open(fs, ino, EXT2_FILE_WRITE, &w->file);
		if (err)
			goto fail;
		*out = w;
		return 0;
	}
	if (size) {
		blk64_t nblocks = (size + w->bs - 1) / w->bs;
		err = ext2fs_fallocate(fs, EXT2_FALLOCATE_FORCE_INIT | EXT2_FALLOCATE_INIT_BEYOND_EOF,
				       ino, &inode, ~0ULL, 0, nblocks);
		if (err)
			goto fail;
		err = ext2fs_inode_size_set(fs, &inode, size);
		if (err)
			goto fail;
		err = ext2fs_write_inode(fs, ino, &inode);
		if (err)
			goto fail;
		err = collect_runs(w, ino, &inode, nblocks);
		if (err)
			goto fail;
		w->tail = malloc(w->bs);
		if (!w->tail) {
			err = EXT2_ET_NO_MEMORY;
			goto fail;
		}
	}
	*out = w;
	return 0;
fail:
	writer_free(w);
	return err;
}

/* Write `count` whole blocks from logical block `lblk` on. */
static errcode_t write_blocks(struct pf_writer *w, blk64_t lblk, blk64_t count, const char *p)
{
	while (count) {
		struct pf_run *r;
		blk64_t n;
		errcode_t err;
		while (w->cur < w->nruns && lblk >= w->runs[w->cur].lblk + w->runs[w->cur].len)
			w->cur++;
		if (w->cur == w->nruns || lblk < w->runs[w->cur].lblk)
			return EXT2_ET_INVALID_ARGUMENT;
		r = &w->runs[w->cur];
		n = r->lblk + r->len - lblk;
		if (n > count)
			n = count;
		if (n > 65536)
			n = 65536;
		err = io_channel_write_blk64(w->fs->io, r->pblk + (lblk - r->lblk), (int)n, p);
		if (err)
			return err;
		lblk += n;
		count -= n;
		p += n * w->bs;
	}
	return 0;
}

long pf_write(void *writer, const void *buf, size_t len)
{
	struct pf_writer *w = writer;
	const char *p = buf;
	errcode_t err;

	if (len > w->size - w->done)
		return EXT2_ET_INVALID_ARGUMENT;
	if (w->file) {
		while (len) {
			unsigned int n = 0;
			unsigned int want = len > (1u << 30) ? (1u << 30) : (unsigned int)len;
			err = ext2fs_file_write(w->file, p, want, &n);
			if (err)
				return err;
			if (n == 0)
				return EXT2_ET_SHORT_WRITE;
			p += n;
			len -= n;
			w->done += n;
		}
		return 0;
	}
	while (len) {
		if (w->tail_len || len < w->bs) {
			/* complete (or start) a partial block */
			size_t n = w->bs - w->tail_len;
			if (n > len)
				n = len;
			memcpy(w->tail + w->tail_len, p, n);
			w->tail_len += n;
			p += n;
			len -= n;
			w->done += n;
			if (w->tail_len == w->bs) {
				err = write_blocks(w, (w->done - 1) / w->bs, 1, w->tail);
				if (err)
					return err;
				w->tail_len = 0;
			}
		} else {
			size_t whole = len / w->bs;
			err = write_blocks(w, w->done / w->bs, whole, p);
			if (err)
				return err;
			p += whole * w->bs;
			len -= whole * w->bs;
			w->done += whole * w->bs;
		}
	}
	return 0;
}

/*
 * Finish (finish != 0: all `size` bytes must have been written; the last
 * block is zero-padded) or give up, and free the writer.
 */
long pf_write_close(void *writer, int finish)
{
	struct pf_writer *w = writer;
	errcode_t err = 0;

	if (finish && w->done != w->size)
		err = EXT2_ET_SHORT_WRITE;
	if (!err && finish && w->file) {
		__u64 cur = 0;
		/* only when it differs: set_size2 fails on inline-data files,
		 * whose size ext2fs_file_write already maintains */
		err = ext2fs_file_get_lsize(w->file, &cur);
		errcode_t err2;
		if (!err && cur != w->size)
			err = ext2fs_file_set_size2(w->file, (ext2_off64_t)w->size);
		err2 = ext2fs_file_close(w->file);
		w->file = NULL;
		if (!err)
			err = err2;
	} else if (!err && finish && w->tail_len) {
		memset(w->tail + w->tail_len, 0, w->bs - w->tail_len);
		err = write_blocks(w, w->done / w->bs, 1, w->tail);
	}
	writer_free(w);
	return err;
}

/* ------------------------------------------------------------------ */
/* Creating                                                            */
/* ------------------------------------------------------------------ */

/*
 * After EXT2_ET_DIR_NO_SPACE: grow a linear directory by one block.  An
 * htree-indexed directory is never grown this way (the new block would not
 * be referenced by the index); libext2fs 1.46+ ext2fs_link() splits leaves
 * and grows the index itself and only reports DIR_NO_SPACE when the tree is
 * at its maximum depth, which is passed on as an error.
 */
static errcode_t expand_linear_dir(ext2_filsys fs, ext2_ino_t dir)
{
	struct ext2_inode in;
	errcode_t err = ext2fs_read_inode(fs, dir, &in);
	if (err)
		return err;
	if (in.i_flags & EXT2_INDEX_FL)
		return EXT2_ET_DIR_NO_SPACE;
	return ext2fs_expand_dir(fs, dir);
}

/* ext2fs_link, growing the directory once if it is full (as create_inode does). */
static errcode_t link_expand(ext2_filsys fs, ext2_ino_t dir, const char *name, ext2_ino_t ino, int ft)
{
	errcode_t err = ext2fs_link(fs, dir, name, ino, ft);
	if (err == EXT2_ET_DIR_NO_SPACE) {
		err = expand_linear_dir(fs, dir);
		if (err)
			return err;
		err = ext2fs_link(fs, dir, name, ino, ft);
	}
	return err;
}

/*
 * New empty regular file `name` in `parent` (which must not contain it), for
 * `size` bytes of content.  Sequence of create_inode.c's do_write_internal.
 * On an inline_data filesystem the file starts inline only when the content
 * might fit in the inode (less than a block); a bigger one would be expanded
 * to an extent-mapped file by its first write anyway, so it starts as one.
 */
long pf_create_file(struct pf_fs *h, uint32_t parent, const char *name, uint16_t perm,
		    uint64_t size, uint32_t *out)
{
	ext2_filsys fs = h->fs;
	ext2_ino_t ino;
	struct ext2_inode inode;
	errcode_t err;

	err = ext2fs_new_inode(fs, parent, LINUX_S_IFREG | 0644, NULL, &ino);
	if (err)
		return err;
	err = link_expand(fs, parent, name, ino, EXT2_FT_REG_FILE);
	if (err)
		return err;
	ext2fs_inode_alloc_stats2(fs, ino, +1, 0);

	memset(&inode, 0, sizeof(inode));
	inode.i_mode = (__u16)(LINUX_S_IFREG | (perm & 07777));
	inode.i_atime = inode.i_ctime = inode.i_mtime = (__u32)fs->now;
	inode.i_links_count = 1;
	if (ext2fs_has_feature_inline_data(fs->super) && size < fs->blocksize) {
		inode.i_flags |= EXT4_INLINE_DATA_FL;
	} else if (ext2fs_has_feature_extents(fs->super)) {
		ext2_extent_handle_t handle;
		inode.i_flags &= ~EXT4_EXTENTS_FL;
		err = ext2fs_extent_open2(fs, ino, &inode, &handle);
		if (err)
			return err;
		ext2fs_extent_free(handle);
	}
	err = ext2fs_write_new_inode(fs, ino, &inode);
	if (err)
		return err;
	if (inode.i_flags & EXT4_INLINE_DATA_FL) {
		err = ext2fs_inline_data_init(fs, ino);
		if (err)
			return err;
	}
	err = touch_dir(fs, parent);
	if (err)
		return err;
	*out = ino;
	return 0;
}

/* After a new entry `name` was linked into `parent`: its inode number, and the parent's times. */
static long created(ext2_filsys fs, ext2_ino_t parent, const char *name, uint32_t *out)
{
	ext2_ino_t ino = 0;
	errcode_t err = ext2fs_lookup(fs, parent, name, (int)strlen(name), NULL, &ino);
	if (err)
		return err;
	err = touch_dir(fs, parent);
	if (err)
		return err;
	*out = ino;
	return 0;
}

/* New directory; parent's link count is handled by ext2fs_mkdir. */
long pf_mkdir(struct pf_fs *h, uint32_t parent, const char *name, uint32_t *out)
{
	ext2_filsys fs = h->fs;
	errcode_t err;

	err = ext2fs_mkdir(fs, parent, 0, name);
	if (err == EXT2_ET_DIR_NO_SPACE) {
		err = expand_linear_dir(fs, parent);
		if (err)
			return err;
		err = ext2fs_mkdir(fs, parent, 0, name);
	}
	if (err)
		return err;
	return created(fs, parent, name, out);
}

/* New symlink (fast when the target fits in the inode, else one block). */
long pf_symlink(struct pf_fs *h, uint32_t parent, const char *name, const char *target, uint32_t *out)
{
	ext2_filsys fs = h->fs;
	errcode_t err;

	err = ext2fs_symlink(fs, parent, 0, name, target);
	if (err == EXT2_ET_DIR_NO_SPACE) {
		err = expand_linear_dir(fs, parent);
		if (err)
			return err;
		err = ext2fs_symlink(fs, parent, 0, name, target);
	}
	if (err)
		return err;
	return created(fs, parent, name, out);
}

/* ------------------------------------------------------------------ */
/* Removing                                                            */
/* ------------------------------------------------------------------ */

/*
 * Drop `count` links from an inode; when none are left, free its extended
 * attribute block, its data and the inode itself (fuse2fs' remove_inode).
 */
static errcode_t drop_links(ext2_filsys fs, ext2_ino_t ino, int count)
{
	struct ext2_inode_large in;
	errcode_t err = read_large(fs, ino, &in);
	if (err)
		return err;
	if (in.i_links_count == 0)
		return 0;
	in.i_links_count = in.i_links_count > count ? (__u16)(in.i_links_count - count) : 0;
	encode_time(fs->now, &in.i_ctime, &in.i_ctime_extra, HAS_EXTRA(fs, &in, i_ctime_extra));
	if (in.i_links_count == 0)
		in.i_dtime = (__u32)fs->now;
	err = write_large(fs, ino, &in);
	if (err || in.i_links_count)
		return err;

	err = ext2fs_free_ext_attr(fs, ino, &in);
	if (err)
		return err;
	if (ext2fs_inode_has_valid_blocks2(fs, (struct ext2_inode *)&in) ||
	    (in.i_flags & EXT4_INLINE_DATA_FL)) {
		err = ext2fs_punch(fs, ino, (struct ext2_inode *)&in, NULL, 0, ~0ULL);
		if (err)
			return err;
	}
	ext2fs_inode_alloc_stats2(fs, ino, -1, LINUX_S_ISDIR(in.i_mode));
	return write_large(fs, ino, &in);
}

/* Remove the entry `name` (inode `ino`) of `parent` and drop one link (not for directories). */
long pf_unlink(struct pf_fs *h, uint32_t parent, const char *name, uint32_t ino)
{
	ext2_filsys fs = h->fs;
	errcode_t err = ext2fs_unlink(fs, parent, name, ino, 0);
	if (err)
		return err;
	err = touch_dir(fs, parent);
	if (err)
		return err;
	return drop_links(fs, ino, 1);
}

/* Remove the empty directory `name` (inode `ino`) of `parent`. */
long pf_rmdir(struct pf_fs *h, uint32_t parent, const char *name, uint32_t ino)
{
	ext2_filsys fs = h->fs;
	struct ext2_inode_large pin;
	errcode_t err = ext2fs_unlink(fs, parent, name, ino, 0);
	if (err)
		return err;
	/* its own "." and the entry in the parent */
	err = drop_links(fs, ino, 2);
	if (err)
		return err;
	/* the child's ".." no longer points at the parent */
	err = read_large(fs, parent, &pin);
	if (err)
		return err;
	if (pin.i_links_count > 1)
		pin.i_links_count--;
	err = write_large(fs, parent, &pin);
	if (err)
		return err;
	return touch_dir(fs, parent);
}

/* ------------------------------------------------------------------ */
/* Extended attributes                                                 */
/* ------------------------------------------------------------------ */

/* *value is malloc'd (free with pf_free); EXT2_ET_EA_KEY_NOT_FOUND when absent. */
long pf_xattr_get(struct pf_fs *h, uint32_t ino, const char *name, void **value, size_t *len)
{
	struct ext2_xattr_handle *x = NULL;
	void *v = NULL;
	size_t n = 0;
	errcode_t err;

	*value = NULL;
	*len = 0;
	err = ext2fs_xattrs_open(h->fs, ino, &x);
	if (err)
		return err;
	err = ext2fs_xattrs_read(x);
	if (!err)
		err = ext2fs_xattr_get(x, name, &v, &n);
	ext2fs_xattrs_close(&x);
	if (err)
		return err;
	*value = malloc(n ? n : 1);
	if (!*value) {
		ext2fs_free_mem(&v);
		return EXT2_ET_NO_MEMORY;
	}
	memcpy(*value, v, n);
	*len = n;
	ext2fs_free_mem(&v);
	return 0;
}

/* Set (value != NULL) or remove (value == NULL) one attribute, stamping ctime. */
long pf_xattr_put(struct pf_fs *h, uint32_t ino, const char *name, const void *value, size_t len)
{
	ext2_filsys fs = h->fs;
	struct ext2_xattr_handle *x = NULL;
	struct ext2_inode_large in;
	errcode_t err, err2;

	err = ext2fs_xattrs_open(fs, ino, &x);
	if (err)
		return err;
	err = ext2fs_xattrs_read(x);
	if (!err) {
		if (value)
			err = ext2fs_xattr_set(x, name, value, len);
		else
			err = ext2fs_xattr_remove(x, name);
	}
	err2 = ext2fs_xattrs_close(&x);
	if (err || err2)
		return err ? err : err2;
	err = read_large(fs, ino, &in);
	if (err)
		return err;
	encode_time(fs->now, &in.i_ctime, &in.i_ctime_extra, HAS_EXTRA(fs, &in, i_ctime_extra));
	return write_large(fs, ino, &in);
}

void pf_free(void *p) { free(p); }

/* ------------------------------------------------------------------ */
/* Error codes the Rust side needs to recognise                        */
/* ------------------------------------------------------------------ */

const long pf_et_file_not_found = EXT2_ET_FILE_NOT_FOUND;
const long pf_et_bad_magic = EXT2_ET_BAD_MAGIC;
const long pf_et_unsupp_feature = EXT2_ET_UNSUPP_FEATURE;
const long pf_et_ro_unsupp_feature = EXT2_ET_RO_UNSUPP_FEATURE;
const long pf_et_block_alloc_fail = EXT2_ET_BLOCK_ALLOC_FAIL;
const long pf_et_inode_alloc_fail = EXT2_ET_INODE_ALLOC_FAIL;
const long pf_et_ea_key_not_found = EXT2_ET_EA_KEY_NOT_FOUND;
const long pf_et_no_directory = EXT2_ET_NO_DIRECTORY;
const long pf_et_past_partition = PF_ET_PAST_PARTITION;

/* Feature bits and masks, from libext2fs' own headers (ffi.rs declares them). */
const uint32_t pf_incompat_recover = EXT3_FEATURE_INCOMPAT_RECOVER;
const uint32_t pf_incompat_extents = EXT3_FEATURE_INCOMPAT_EXTENTS;
const uint32_t pf_ro_compat_orphan_present = EXT4_FEATURE_RO_COMPAT_ORPHAN_PRESENT;
const uint16_t pf_state_valid = EXT2_VALID_FS;
const uint16_t pf_state_error = EXT2_ERROR_FS;
/*
 * What the linked libext2fs can read.  The header adds MMP only under
 * CONFIG_MMP, which is private to the library's own build (on by default); a
 * library built without it refuses MMP in ext2fs_open2, which pf_open reports.
 */
const uint32_t pf_lib_incompat_supp = EXT2_LIB_FEATURE_INCOMPAT_SUPP | EXT4_FEATURE_INCOMPAT_MMP;
/*
 * What a read-write session accepts: what libext2fs writes correctly and the
 * Rust side's space accounting understands.  Left out on purpose: mmp (random
 * sequence numbers), ea_inode, encrypt, casefold, bigalloc (cluster
 * accounting), quota and project (quota files would go stale), shared_blocks,
 * read-only, verity, replica.
 */
const uint32_t pf_write_compat =
	EXT2_FEATURE_COMPAT_DIR_PREALLOC | EXT2_FEATURE_COMPAT_IMAGIC_INODES |
	EXT3_FEATURE_COMPAT_HAS_JOURNAL | EXT2_FEATURE_COMPAT_EXT_ATTR |
	EXT2_FEATURE_COMPAT_RESIZE_INODE | EXT2_FEATURE_COMPAT_DIR_INDEX |
	EXT4_FEATURE_COMPAT_SPARSE_SUPER2 | EXT4_FEATURE_COMPAT_FAST_COMMIT |
	EXT4_FEATURE_COMPAT_STABLE_INODES | EXT4_FEATURE_COMPAT_ORPHAN_FILE;
const uint32_t pf_write_incompat =
	EXT2_FEATURE_INCOMPAT_FILETYPE | EXT2_FEATURE_INCOMPAT_META_BG |
	EXT3_FEATURE_INCOMPAT_EXTENTS | EXT4_FEATURE_INCOMPAT_64BIT |
	EXT4_FEATURE_INCOMPAT_FLEX_BG | EXT4_FEATURE_INCOMPAT_CSUM_SEED |
	EXT4_FEATURE_INCOMPAT_LARGEDIR | EXT4_FEATURE_INCOMPAT_INLINE_DATA;
const uint32_t pf_write_ro_compat =
	EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER | EXT2_FEATURE_RO_COMPAT_LARGE_FILE |
	EXT4_FEATURE_RO_COMPAT_HUGE_FILE | EXT4_FEATURE_RO_COMPAT_GDT_CSUM |
	EXT4_FEATURE_RO_COMPAT_DIR_NLINK | EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE |
	EXT4_FEATURE_RO_COMPAT_METADATA_CSUM;

/* ------------------------------------------------------------------ */
/* Allocation (for block maps)                                         */
/* ------------------------------------------------------------------ */

typedef int (*pf_run_cb)(void *ctx, uint64_t first, uint64_t count);

/*
 * Every block the filesystem uses, as runs of consecutive blocks passed to `cb` in increasing
 * order (a non-zero return stops the walk): the block bitmap as libext2fs reads it (which, for
 * groups flagged BLOCK_UNINIT, already holds the group's metadata: rw_bitmaps.c
 * mark_uninit_bg_group_blocks), plus, marked again here so that nothing depends on that, every
 * group's superblock backup, group descriptors and reserved GDT blocks
 * (ext2fs_reserve_super_and_bgd), its block and inode bitmaps and its inode table, and the
 * blocks before s_first_data_block (the boot block of a 1 KiB-block filesystem).
 */
long pf_used_blocks(struct pf_fs *h, pf_run_cb cb, void *ctx)
{
	ext2_filsys fs = h->fs;
	ext2fs_block_bitmap used = NULL;
	errcode_t err;
	blk64_t first, last, at, start, end;

	if (!fs->block_map) {
		err = ext2fs_read_block_bitmap(fs);
		if (err)
			return (err && h->io.refused) ? PF_ET_PAST_PARTITION : err;
	}
	err = ext2fs_copy_bitmap(fs->block_map, &used);
	if (err)
		return err;
	first = ext2fs_get_block_bitmap_start2(used);
	last = ext2fs_get_block_bitmap_end2(used);
	for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
		blk64_t b;
		ext2fs_reserve_super_and_bgd(fs, g, used);
		b = ext2fs_block_bitmap_loc(fs, g);
		if (b >= first && b <= last)
			ext2fs_mark_block_bitmap2(used, b);
		b = ext2fs_inode_bitmap_loc(fs, g);
		if (b >= first && b <= last)
			ext2fs_mark_block_bitmap2(used, b);
		b = ext2fs_inode_table_loc(fs, g);
		if (b >= first && b + fs->inode_blocks_per_group - 1 <= last)
			ext2fs_mark_block_bitmap_range2(used, b, fs->inode_blocks_per_group);
	}
	/* Blocks before the bitmap's start (block 0 of a 1 KiB-block filesystem). */
	if (first > 0 && cb(ctx, 0, first)) {
		ext2fs_free_block_bitmap(used);
		return 0;
	}
	at = first;
	while (at <= last) {
		if (ext2fs_find_first_set_block_bitmap2(used, at, last, &start))
			break;
		if (ext2fs_find_first_zero_block_bitmap2(used, start, last, &end))
			end = last + 1;
		if (cb(ctx, start, end - start))
			break;
		at = end;
	}
	ext2fs_free_block_bitmap(used);
	return 0;
}
