// SPDX-License-Identifier: GPL-2.0
/*
 * root_vmcs_oracle - ask the running kernel where it puts a root VMCS page.
 *
 * x86_vmx_init() (arch/x86/virt/hw.c, __x86_vmx_init()) allocates one zeroed
 * order-0 page for every possible CPU with
 *
 *	__alloc_pages_node(cpu_to_node(cpu), GFP_KERNEL | __GFP_ZERO, 0)
 *
 * and keeps them all. This module runs that loop once when it is loaded,
 * holding every page until the loop ends, records cpu_to_node() and the
 * node the page allocator really served (page_to_nid()), frees the pages,
 * and reports one line per possible CPU, "cpu node nid", in
 * /proc/root_vmcs_oracle. Nothing else is touched: it neither reads MSRs
 * nor needs VMX, so it answers under QEMU's TCG as on bare metal.
 *
 * The answer is for the zonelists the kernel holds at load time. Those are
 * the boot-time ones unless memory was hot-added since (online_pages()
 * rebuilds them), so load it before any memory hotplug.
 */
#include <linux/cpumask.h>
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/numa.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/topology.h>

#define ORACLE_NAME "root_vmcs_oracle"

struct placement {
	int node;	/* cpu_to_node(cpu) */
	int nid;	/* page_to_nid() of the page asked for on that node */
};

/* Indexed by CPU number; only possible CPUs are filled and printed. */
static struct placement *placements;

static int oracle_show(struct seq_file *m, void *v)
{
	unsigned int cpu;

	for_each_possible_cpu(cpu)
		seq_printf(m, "%u %d %d\n", cpu, placements[cpu].node,
			   placements[cpu].nid);
	return 0;
}

static int __init oracle_init(void)
{
	struct page **pages;
	unsigned int cpu;
	int ret = 0;

	placements = kcalloc(nr_cpu_ids, sizeof(*placements), GFP_KERNEL);
	pages = kcalloc(nr_cpu_ids, sizeof(*pages), GFP_KERNEL);
	if (!placements || !pages) {
		ret = -ENOMEM;
		goto out;
	}

	/*
	 * Every page stays allocated until the loop is over, as in
	 * x86_vmx_init(): a page freed early could be handed straight back
	 * for the next CPU and hide a node running short.
	 */
	for_each_possible_cpu(cpu) {
		int node = cpu_to_node(cpu);
		struct page *page;

		/*
		 * x86 gives every possible CPU a node (numa_init_array()), so
		 * this cannot happen there; __alloc_pages_node() would take a
		 * bad node for a real one, so refuse instead of guessing.
		 */
		if (node < 0 || node >= MAX_NUMNODES) {
			pr_err(ORACLE_NAME ": cpu_to_node(%u) is %d, not a node\n",
			       cpu, node);
			ret = -ERANGE;
			goto out;
		}
		page = __alloc_pages_node(node, GFP_KERNEL | __GFP_ZERO, 0);
		if (!page) {
			pr_err(ORACLE_NAME ": no page for CPU %u on node %d\n",
			       cpu, node);
			ret = -ENOMEM;
			goto out;
		}
		pages[cpu] = page;
		placements[cpu].node = node;
		placements[cpu].nid = page_to_nid(page);
	}

	if (!proc_create_single(ORACLE_NAME, 0444, NULL, oracle_show))
		ret = -ENOMEM;
out:
	if (pages) {
		for_each_possible_cpu(cpu)
			if (pages[cpu])
				__free_page(pages[cpu]);
		kfree(pages);
	}
	if (ret) {
		kfree(placements);
		placements = NULL;
	}
	return ret;
}

static void __exit oracle_exit(void)
{
	remove_proc_entry(ORACLE_NAME, NULL);
	kfree(placements);
}

module_init(oracle_init);
module_exit(oracle_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Where the kernel allocates each possible CPU's root VMCS page");
