# Site environment for the Slurm scripts (copy to cluster/env/<site>.sh and select it with BILEVEL_SITE).
# Load compilers/MPI/PETSc here, e.g. `module load openmpi petsc slepc` or `spack env activate bilevel`.
export BILEVEL_LAUNCH=${BILEVEL_LAUNCH:-"mpirun --bind-to core --map-by core"}   # or "srun --mpi=pmix"
export OMP_NUM_THREADS=1
export OPENBLAS_NUM_THREADS=1
