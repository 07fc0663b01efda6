# Site environment for the Slurm scripts (copy to cluster/env/<site>.sh and select it with BILEVEL_SITE).
# Load compilers/MPI/PETSc here, e.g. `module load openmpi petsc slepc` or `spack env activate bilevel`.
# BILEVEL_LAUNCH: leave unset to let cluster/jobs/solve.sbatch choose (`srun --mpi=pmix` when it starts
# all ranks as one job, else mpirun), or fix it, e.g. "srun --mpi=pmix" or "mpirun --bind-to core".
export OMP_NUM_THREADS=1
export OPENBLAS_NUM_THREADS=1
