"""How Lu-177 deposits its energy: decay data, materials, interaction data, photon and electron transport, the
Monte Carlo engine, voxel dose kernels made with it, and their convolution with density scaling (VDK).

Nothing here knows about phantoms, networks or time points.
"""
