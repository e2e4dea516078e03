# Installed by `cloudmount integrate`; `cloudmount integrate --remove` removes it.
"""cloudmount in Nautilus (python3-nautilus, extension API 4.0): the state of each file of a
cloudmount mount as an emblem and a "Cloud state" column, and the menu entries Keep on this
device, Don't keep on this device, Free up space and Add as sync folder. The logic is in
cloudmount_fm, which `cloudmount integrate` installs in $XDG_DATA_HOME/cloudmount/file-manager
(the path below)."""

import sys

sys.path.insert(0, "@CORE_DIR@")

import gi  # noqa: E402

gi.require_version("Nautilus", "4.0")
from gi.repository import GObject, Nautilus  # noqa: E402

import cloudmount_fm as core  # noqa: E402

FM = "nautilus"
_refresher = core.Refresher()


# No items for the background of a folder: Nautilus 43 runs a background item when the
# selection's item at the same place in the menu is chosen, which would act on the whole folder.
class CloudmountMenu(GObject.GObject, Nautilus.MenuProvider):
    def get_file_items(self, *args):
        # API 4.0 passes (files); older ones (window, files).
        return core.menu_items(Nautilus, FM, args[-1], refresher=_refresher)


class CloudmountInfo(GObject.GObject, Nautilus.InfoProvider):
    def update_file_info(self, item):
        core.update_info(item, FM, _refresher)


class CloudmountColumns(GObject.GObject, Nautilus.ColumnProvider):
    def get_columns(self):
        return [core.column(Nautilus)]
