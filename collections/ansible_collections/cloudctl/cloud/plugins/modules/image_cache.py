#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Make sure one image file (by sha256) is in a Node Controller's image cache."""

from __future__ import annotations

DOCUMENTATION = r"""
module: image_cache
short_description: Keep one image file in the Node Controller's image cache
description:
  - The image cache of a Node Controller holds image files (disk images, kernels, ramdisks)
    named by their sha256, C(<cache_dir>/<sha256>). Instances use them as read-only backing
    files (qcow2 overlays) or as kernel and initrd.
  - C(state=present) makes sure the file is there. A cached file is a hit, and its mtime is set
    to now (the mtime is the cache's LRU clock) and nothing is downloaded. Otherwise the file
    is downloaded from I(url) (a presigned HTTP GET URL of the Walrus C(images) bucket) to a
    temporary name in the cache directory, its sha256 (and I(size)) are verified, it is
    fsync-ed, made mode C(0644) with the group of the cache directory (the QEMU user reads it
    through that group) and renamed into place. A file with the wrong checksum is deleted and
    the module fails naming the expected and actual values.
  - Concurrent runs for the same image on one node download it once. The download holds an
    exclusive lock on C(<cache_dir>/.<sha256>.lock); a second run waits for it and then finds
    the file (a hit).
  - After a present run the cache is trimmed to I(node_config)'s C(cache_max_mb), least
    recently used files are evicted first. Never evicted are the file this run ensured, files
    used in the last I(evict_grace) seconds (a launch may have fetched it and not yet
    recorded its instance), and every sha256 listed under C(images) in an instance's
    C(<instances_dir>/*/instance.json) (written by M(cloudctl.cloud.cloud_instance)). When nothing more can
    be evicted and the cache is still over the cap, the module warns and succeeds.
  - C(state=absent) removes the file, and fails when an instance still uses it.
  - Check mode reports whether the file would be downloaded or removed and changes nothing
    (not even the mtime of a hit).
options:
  sha256:
    description: sha256 of the file, 64 hex digits (the file's name in the cache).
    type: str
    required: true
  url:
    description:
      - HTTP(S) URL to download the file from (a presigned GET URL). Needed only when the
        file is not cached. Never logged; error messages do not contain it.
    type: str
  size:
    description: Expected size in bytes; a download (or a cached file) of another size fails.
    type: int
  state:
    description: Whether the file must be in the cache.
    type: str
    choices: [present, absent]
    default: present
  node_config:
    description: The node facts written by the nc role (C(cache_dir), C(cache_max_mb), C(instances_dir)).
    type: path
    default: /etc/cloud/nc/node.json
  timeout:
    description: Seconds to wait for the HTTP server (connect and each read).
    type: int
    default: 60
  evict_grace:
    description: Files used less than this many seconds ago are never evicted.
    type: int
    default: 300
notes:
  - Runs on the Node Controller as root; needs only the Python standard library.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change and changes nothing.
  diff_mode:
    support: full
    details: Shows the cache entry before and after.
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Make sure the image of the instance is cached
  cloudctl.cloud.image_cache:
    sha256: "{{ image.sha256 }}"
    url: "{{ image.url }}"
    size: "{{ image.size }}"
  register: cached

- name: Drop an image from the cache of this node
  cloudctl.cloud.image_cache:
    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    state: absent
"""

RETURN = r"""
path:
  description: Path of the file in the cache.
  returned: always
  type: str
  sample: /var/lib/cloud/nc/cache/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
hit:
  description: The file was already cached (or another run downloaded it while this one waited).
  returned: always
  type: bool
downloaded_bytes:
  description: Bytes downloaded by this run (0 on a hit and in check mode).
  returned: always
  type: int
seconds:
  description: Wall time of the run, including waiting for a concurrent download.
  returned: always
  type: float
evicted:
  description: sha256 of the files evicted to keep the cache under its cap.
  returned: always
  type: list
  elements: str
cache_bytes:
  description: Total size of the cached files after the run.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cloudctl.cloud.plugins.module_utils.nc_image_cache import (
    ARGUMENT_SPEC,
    core,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    module.exit_json(**core(module))


if __name__ == "__main__":
    main()
