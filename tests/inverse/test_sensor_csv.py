"""Sensor data from CSV: grouping by coordinates, sigma, and errors naming file, row, column."""

import numpy as np
import pytest

from pdeinv.discretize import grid, structured_triangle_mesh
from pdeinv.inverse import read_sensor_csv

SPACE = grid((8, 8))
CSV = "wells.csv"


def test_rows_in_any_order_grouped_by_sensor(write_file):
    path = write_file(
        " Time , X,y,value,sigma\n"
        "0.2,0.5,0.25,-2.0,0.1\n"
        "0.1,0.25,0.75,1.0,0.1\n"
        "\n"
        "0.1,0.5,0.25,-1.0,0.2\n"
        "0.2,0.25,0.75,2.0,0.1\n",
        CSV,
    )
    data = read_sensor_csv(path, SPACE)
    np.testing.assert_allclose(data.times, [0.1, 0.2])
    np.testing.assert_allclose(data.sensors, [[0.5, 0.25], [0.25, 0.75]])
    np.testing.assert_allclose(data.values, [[-1.0, 1.0], [-2.0, 2.0]])
    np.testing.assert_allclose(data.sigma, [[0.2, 0.1], [0.1, 0.1]])
    no_sigma = read_sensor_csv(write_file("value,time,y,x\n1.5,1.0,0.5,0.5\n", CSV), SPACE)
    assert no_sigma.sigma is None and no_sigma.values.shape == (1, 1)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("time,x,value\n1,0.5,2\n", r"line 1: missing column\(s\) y"),
        ("time,x,y,valu\n1,0.5,0.5,2\n", r"line 1: unknown column 'valu'; did you mean 'value'"),
        ("time,x,y,z,value\n1,0.5,0.5,0,2\n", r"unknown column 'z'.*the domain is 2-D"),
        ("time,x,y,value\n1,0.5,0.5,abc\n", r"row 1 \(line 2\), column 'value': 'abc' is not a"),
        ("time,x,y,value\n1,0.5,0.5,2\n2,0.5,0.5,nan\n",
         r"row 2 \(line 3\), column 'value'.*finite"),
        ("time,x,y,value\n-1,0.5,0.5,2\n", r"row 1 \(line 2\), column 'time': times must be > 0"),
        ("time,x,y,value,sigma\n1,0.5,0.5,2,0\n", r"column 'sigma': must be > 0"),
        ("time,x,y,value\n1,0.5,1.5,2\n", r"row 1 \(line 2\), columns x, y: sensor at \[0.5, 1.5\] "
         r"lies outside the domain"),
        ("time,x,y,value\n1,0.5,0.5,2\n1,0.5,0.5,3\n",
         r"row 2 .* a second value .* \(first in row 1"),
        ("time,x,y,value\n1,0.5,0.5,2\n2,0.25,0.5,3\n",
         r"sensor at \[0.25, 0.5\] has no row at time 1"),
        ("time,x,y,value\n1,0.5,0.5\n", r"row 1 \(line 2\): 3 cells, the header has 4"),
        ("time,x,y,value\n", "no data rows"),
    ],
)  # fmt: skip
def test_errors_name_file_row_and_column(write_file, text, pattern):
    path = write_file(text, CSV)
    with pytest.raises(ValueError, match=pattern) as info:
        read_sensor_csv(path, SPACE)
    assert str(path) in str(info.value)


def test_sensor_outside_a_mesh(write_file):
    mesh = structured_triangle_mesh(4, 4)
    inside = read_sensor_csv(write_file("time,x,y,value\n1,0.3,0.3,1\n", CSV), mesh)
    assert inside.sensors.shape == (1, 2)
    with pytest.raises(ValueError, match="outside the domain"):
        read_sensor_csv(write_file("time,x,y,value\n1,1.3,0.3,1\n", CSV), mesh)
