"""Numbers of Choi & Lee's Table 2 (original -> regularized; MI | accuracy), from SPEC.md 4.3.

PAPER_TABLE2[benchmark][dataset][estimator] = (mi_orig, mi_reg, acc_orig, acc_reg);
an MI of 0.0 marks a run the paper reports as diverged or collapsed.
"""

PAPER_TABLE2 = {
    "slb": {
        "cifar10": {"mine": (2.300, 2.298, .850, .856), "smile": (2.297, 2.300, .854, .853),
                    "infonce": (2.301, 2.302, .845, .845), "nwj": (2.297, 2.294, .859, .862),
                    "tuba": (2.297, 2.300, .862, .859), "js": (1.944, 2.000, .838, .842)},
        "cifar100": {"mine": (4.597, 4.603, .610, .610), "smile": (4.595, 4.602, .601, .606),
                     "infonce": (4.594, 4.599, .589, .593), "nwj": (4.572, 4.586, .558, .599),
                     "tuba": (4.495, 4.603, .543, .611), "js": (4.088, 4.240, .591, .598)},
    },
    "clb": {
        "cifar10": {"mine": (2.233, 2.240, .812, .823), "smile": (0.0, 2.065, .100, .830),
                    "infonce": (1.705, 1.739, .830, .826), "nwj": (0.0, 1.910, .100, .831),
                    "tuba": (0.0, 1.358, .100, .830), "js": (1.552, 1.556, .837, .832)},
        "cifar100": {"mine": (4.634, 4.563, .522, .540), "smile": (0.0, 4.677, .012, .585),
                     "infonce": (4.112, 4.115, .576, .585), "nwj": (0.0, 4.065, .010, .521),
                     "tuba": (0.0, 2.731, .010, .490), "js": (3.253, 3.393, .451, .463)},
    },
}

# batch size and epochs of appendix D.3, per benchmark and dataset
PAPER_BATCH = {"cifar10": 10, "cifar100": 100}
PAPER_EPOCHS = {"slb": {"cifar10": 40, "cifar100": 100}, "clb": {"cifar10": 100, "cifar100": 150}}
