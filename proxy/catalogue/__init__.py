"""The model catalogue (``proxy/catalog.yaml``): capabilities, prices in the shape each
provider bills, sources and lifecycle, per ``<provider type>/<model id>``.

``schema`` is the row shape, ``load`` reads the file and merges operator overrides.
"""
