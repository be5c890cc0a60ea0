import json, time, numpy as np, sys
sys.path.insert(0, '.')
from pathlib import Path
import tempfile
d=Path(tempfile.mkdtemp())
n=40000
xs = np.arange(2 * n) * (3990 / (2 * n)) + 5
ys = np.where(np.arange(2 * n) % 2 == 0, 10.0, 3990.0)
ring = np.column_stack([xs, ys]).tolist() + [[3995, 3995], [5, 3995], [xs[0], ys[0]]]
(d/"a.geojson").write_text(json.dumps([{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},"properties": {"classification": {"name": "Cancer"}}}]))
from csaws_tools.qupath import read_geojson, rasterise_geojson
t=time.time(); a=read_geojson(d/"a.geojson"); print("read", time.time()-t)
import shapely
g=a.geometries["cancer"][0]; print(g.geom_type, g.is_valid)
t=time.time()
try: rasterise_geojson(d/"a.geojson",(4000,4000))
except Exception as e: print(e)
print("rast", time.time()-t)
