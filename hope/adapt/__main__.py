"""``python -m hope.adapt convert SRC_DIR OUT_DIR --levels 16,512,static``."""

from hope.adapt.convert import main

main()
