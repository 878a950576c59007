select
    id as assignment_id,
    course_id,
    assignment_group_id,
    title,
    points_possible,
    due_at,
    unlock_at,
    lock_at,
    submission_types,
    workflow_state,
    coalesce(workflow_state = 'deleted', false) as is_deleted
from {{ source('canvas', 'assignments') }}
