# Installed by `cloudmount integrate`; `cloudmount integrate --remove` removes it.
"""cloudmount in Caja (python3-caja): the state of each file of a cloudmount mount as an emblem and a
"Cloud state" column, and the menu entries Keep on this device, Don't keep on this device, Free
up space and Add as sync folder. The logic is in cloudmount_fm, which `cloudmount integrate`
installs in $XDG_DATA_HOME/cloudmount/file-manager (the path below)."""

import sys

sys.path.insert(0, "@CORE_DIR@")

import gi  # noqa: E402

gi.require_version("Caja", "2.0")
from gi.repository import GObject, Caja  # noqa: E402

import cloudmount_fm as core  # noqa: E402

FM = "caja"
_refresher = core.Refresher()


class CloudmountMenu(GObject.GObject, Caja.MenuProvider):
    def get_file_items(self, *args):
        # Caja passes (window, files).
        return core.menu_items(Caja, FM, args[-1], refresher=_refresher)


class CloudmountInfo(GObject.GObject, Caja.InfoProvider):
    def update_file_info(self, item):
        core.update_info(item, FM, _refresher)


class CloudmountColumns(GObject.GObject, Caja.ColumnProvider):
    def get_columns(self):
        return [core.column(Caja)]
