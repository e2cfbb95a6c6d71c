"""MRML node helpers both modules use: the segments of a segmentation as voxel masks, a volume shown as a map (colour
table and fixed window), table columns as curves of a plot chart, a volume added for a self-test. The voxel
conversions themselves are the foundation's (ImagingBasics.slicer_nodes)."""

import slicer


def segmentMasks(segmentationNode, referenceVolumeNode, idPrefix=""):
    """(segment ID, name, RGB colour, [k, j, i] mask on the reference volume's grid) of every segment whose ID starts
    with ``idPrefix``, in the segmentation's order."""
    segmentation = segmentationNode.GetSegmentation()
    masks = []
    for index in range(segmentation.GetNumberOfSegments()):
        segmentId = segmentation.GetNthSegmentID(index)
        if not segmentId.startswith(idPrefix):
            continue
        segment = segmentation.GetSegment(segmentId)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolumeNode)
        masks.append((segmentId, segment.GetName(), tuple(segment.GetColor()), mask))
    return masks


def showVolume(node, name, volume, colourNodeId, window):
    """Put ``volume`` (an ImagingBasics Volume) into ``node`` (a new scalar volume node called ``name`` when None) and
    show it with the colour node ``colourNodeId`` and the fixed ``window`` (min, max). Returns the node."""
    from ImagingBasics.slicer_nodes import update_node_from_volume

    node = node or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    update_node_from_volume(node, volume)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(colourNodeId)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(*window)
    return node


def showCurves(chart, name, table, xColumn, curves, tag, titles):
    """A plot chart (``chart``, or a new one called ``name``) of table columns against ``xColumn``: one line per
    (column, curve name, RGB colour or None[, line style]) of ``curves``; the line style is the name of a
    vtkMRMLPlotSeriesNode LineStyle constant ("Solid", the default, "Dash", "Dot", ...). The series of an earlier call,
    marked with the node attribute ``tag``, are replaced; ``titles``: (chart, x axis, y axis). Shown in the layout when
    Slicer has the Plots module. Returns the chart."""
    chart = chart or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    for index in reversed(range(chart.GetNumberOfPlotSeriesNodes())):
        old = chart.GetNthPlotSeriesNode(index)
        if old is not None and old.GetAttribute(tag):
            chart.RemovePlotSeriesNodeID(old.GetID())
            slicer.mrmlScene.RemoveNode(old)
    for curve in curves:
        column, curveName, colour = curve[:3]
        plot = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", curveName)
        plot.SetAttribute(tag, "1")
        plot.SetAndObserveTableNodeID(table.GetID())
        plot.SetXColumnName(xColumn)
        plot.SetYColumnName(column)
        plot.SetPlotType(plot.PlotTypeScatter)
        plot.SetMarkerStyle(plot.MarkerStyleNone)
        if colour is not None:
            plot.SetColor(*colour)
        if len(curve) > 3:
            plot.SetLineStyle(getattr(plot, "LineStyle" + curve[3]))
        chart.AddAndObservePlotSeriesNodeID(plot.GetID())
    chart.SetTitle(titles[0])
    chart.SetXAxisTitle(titles[1])
    chart.SetYAxisTitle(titles[2])
    if hasattr(slicer.modules, "plots"):
        slicer.modules.plots.logic().ShowChartInLayout(chart)
    return chart


def addVolume(volume, name):
    """A new scalar volume node holding ``volume`` (an ImagingBasics Volume; the self-tests' phantoms)."""
    from ImagingBasics.volume import ijk_to_ras_matrix

    return slicer.util.addVolumeFromArray(volume.array, ijk_to_ras_matrix(volume), name)
