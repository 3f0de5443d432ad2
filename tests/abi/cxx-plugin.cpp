// cxx-plugin.cpp: a plugin written in C++11, for test-plugin-abi.bats.
// It must compile with g++ -std=c++11 -pedantic -Wall -Wextra -Werror
// against <blkgate-plugin.h>, register with BLKGATE_REGISTER_PLUGIN
// (plugin_init must get C linkage) and serve I/O.

#include <cstring>
#include <vector>

#define BLKGATE_API_VERSION 1
#define BLKGATE_THREAD_MODEL BLKGATE_THREAD_MODEL_SERIALIZE_REQUESTS
#include <blkgate-plugin.h>

namespace {

int64_t disk_size = -1;
std::vector<char> disk;

int
cxx_config (const char *key, const char *value)
{
  if (std::strcmp (key, "size") == 0) {
    disk_size = blkgate_parse_size (value);
    return disk_size == -1 ? -1 : 0;
  }
  blkgate_error ("unknown parameter '%s'", key);
  return -1;
}

int
cxx_config_complete ()
{
  if (disk_size == -1) {
    blkgate_error ("size=SIZE is required");
    return -1;
  }
  disk.assign (static_cast<size_t> (disk_size), 0);
  return 0;
}

void *
cxx_open (int)
{
  return &disk;
}

int64_t
cxx_get_size (void *)
{
  return disk_size;
}

int
cxx_preadv (void *, const struct iovec *iov, int iovcnt, uint64_t offset,
            uint32_t)
{
  for (int i = 0; i < iovcnt; offset += iov[i++].iov_len)
    std::memcpy (iov[i].iov_base, &disk[offset], iov[i].iov_len);
  return 0;
}

int
cxx_pwritev (void *, const struct iovec *iov, int iovcnt, uint64_t offset,
             uint32_t)
{
  for (int i = 0; i < iovcnt; offset += iov[i++].iov_len)
    std::memcpy (&disk[offset], iov[i].iov_base, iov[i].iov_len);
  return 0;
}

// No designated initializers before C++20: fill a zeroed struct.
struct blkgate_plugin
make_plugin ()
{
  struct blkgate_plugin p;

  std::memset (&p, 0, sizeof p);
  p.name = "cxx";
  p.version = "1.0";
  p.description = "a RAM disk written in C++";
  p.config = cxx_config;
  p.config_complete = cxx_config_complete;
  p.config_help = "size=<SIZE>  (required) Size of the disk.";
  p.magic_config_key = "size";
  p.open = cxx_open;
  p.get_size = cxx_get_size;
  p.preadv = cxx_preadv;
  p.pwritev = cxx_pwritev;
  return p;
}

} // namespace

static struct blkgate_plugin plugin = make_plugin ();

BLKGATE_REGISTER_PLUGIN (plugin)
